/** Dark/light theme: follows the system unless the volunteer picked one (remembered in localStorage). */
export type ThemeChoice = 'system' | 'dark' | 'light';
const STORAGE_KEY = 'meshrun.theme';

export function applyTheme(choice: ThemeChoice): void {
  try {
    localStorage.setItem(STORAGE_KEY, choice);
  } catch {
    // storage may be unavailable (private mode); the theme still applies for this page
  }
  const dark =
    choice === 'dark' || (choice === 'system' && matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  document.documentElement.dataset.themeChoice = choice;
}

export function storedTheme(): ThemeChoice {
  let value: string | null = null;
  try {
    value = localStorage.getItem(STORAGE_KEY);
  } catch {
    // ignore
  }
  return value === 'dark' || value === 'light' ? value : 'system';
}

export function nextTheme(current: ThemeChoice): ThemeChoice {
  return current === 'system' ? 'dark' : current === 'dark' ? 'light' : 'system';
}
