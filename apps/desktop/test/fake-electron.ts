/**
 * A stand-in for the `electron` module so the real main process (main.ts, with the real embedded node,
 * preferences on disk and systeminformation) can be exercised under plain Node: Electron's binary cannot be
 * downloaded here. It implements only what main.ts uses and records what the app did, for the test to check.
 * Everything that is not Electron's UI (the node, the rules, the files) stays real.
 */
import { EventEmitter } from 'node:events';

export const fake = {
  userData: '',
  idleSeconds: 0,
  onBattery: false,
  exitCode: null as number | null,
  errorBoxes: [] as { title: string; content: string }[],
  notifications: [] as string[],
  loginItem: null as unknown,
  windows: [] as FakeBrowserWindow[],
  trays: [] as FakeTray[],
  handlers: new Map<string, (event: unknown, ...args: unknown[]) => unknown>(),
  messageBoxResponse: { response: 0, checkboxChecked: false },
  openDialogResult: { canceled: true, filePaths: [] as string[] },
  relaunched: false,
};

class FakeApp extends EventEmitter {
  getPath(name: string): string {
    if (name !== 'userData') throw new Error(`fake electron: getPath(${name}) not supported`);
    return fake.userData;
  }
  requestSingleInstanceLock(): boolean {
    return true;
  }
  whenReady(): Promise<void> {
    return Promise.resolve();
  }
  setLoginItemSettings(settings: unknown): void {
    fake.loginItem = settings;
  }
  quit(): void {
    const event = { defaultPrevented: false, preventDefault: () => (event.defaultPrevented = true) };
    this.emit('before-quit', event);
    if (!event.defaultPrevented) this.exit(0);
  }
  relaunch(): void {
    fake.relaunched = true;
  }
  exit(code = 0): void {
    fake.exitCode = code;
    this.emit('fake-exit', code);
  }
}
export const app = new FakeApp();

class FakeWebContents extends EventEmitter {
  sent: { channel: string; payload: unknown }[] = [];
  setWindowOpenHandler(): void {}
  send(channel: string, payload: unknown): void {
    if (this.sent.length < 1000) this.sent.push({ channel, payload });
  }
}

export class FakeBrowserWindow extends EventEmitter {
  readonly options: Record<string, unknown>;
  readonly webContents = new FakeWebContents();
  loadedFile: string | null = null;
  visible = false;
  destroyed = false;
  constructor(options: Record<string, unknown>) {
    super();
    this.options = options;
    fake.windows.push(this);
  }
  static getAllWindows(): FakeBrowserWindow[] {
    return fake.windows.filter((w) => !w.destroyed);
  }
  async loadFile(file: string): Promise<void> {
    this.loadedFile = file;
    this.emit('ready-to-show');
    this.webContents.emit('did-finish-load');
  }
  show(): void {
    this.visible = true;
  }
  hide(): void {
    this.visible = false;
  }
  focus(): void {}
  isDestroyed(): boolean {
    return this.destroyed;
  }
  /** What the user clicking the close button does. */
  userClose(): void {
    const event = { defaultPrevented: false, preventDefault: () => (event.defaultPrevented = true) };
    this.emit('close', event);
    if (!event.defaultPrevented) this.destroyed = true;
  }
}
export { FakeBrowserWindow as BrowserWindow };

export class FakeTray {
  image: unknown;
  tooltip = '';
  menu: { label?: string; type?: string; checked?: boolean; click?: (item: { checked: boolean }) => void }[] =
    [];
  constructor(image: unknown) {
    this.image = image;
    fake.trays.push(this);
  }
  setImage(image: unknown): void {
    this.image = image;
  }
  setToolTip(text: string): void {
    this.tooltip = text;
  }
  setContextMenu(menu: { items: FakeTray['menu'] }): void {
    this.menu = menu.items;
  }
  on(): void {}
  destroy(): void {}
}
export { FakeTray as Tray };

export const Menu = {
  buildFromTemplate: (items: FakeTray['menu']) => ({ items }),
};

export const nativeImage = {
  createFromDataURL: (url: string) => ({ url }),
};

export class Notification {
  readonly body: string;
  constructor(options: { body: string }) {
    this.body = options.body;
  }
  static isSupported(): boolean {
    return true;
  }
  show(): void {
    fake.notifications.push(this.body);
  }
}

export const dialog = {
  showErrorBox(title: string, content: string): void {
    fake.errorBoxes.push({ title, content });
  },
  async showMessageBox(): Promise<{ response: number; checkboxChecked: boolean }> {
    return fake.messageBoxResponse;
  },
  async showOpenDialog(): Promise<{ canceled: boolean; filePaths: string[] }> {
    return fake.openDialogResult;
  },
};

export const ipcMain = {
  handle(channel: string, handler: (event: unknown, ...args: unknown[]) => unknown): void {
    fake.handlers.set(channel, handler);
  },
};

export const powerMonitor = {
  getSystemIdleTime: () => fake.idleSeconds,
  isOnBatteryPower: () => fake.onBattery,
};

export const session = {
  defaultSession: {
    setPermissionRequestHandler(): void {},
    setPermissionCheckHandler(): void {},
    webRequest: { onBeforeRequest(): void {} },
  },
};

export const shell = {
  async openExternal(): Promise<void> {},
};

export default {
  app,
  BrowserWindow: FakeBrowserWindow,
  Tray: FakeTray,
  Menu,
  nativeImage,
  Notification,
  dialog,
  ipcMain,
  powerMonitor,
  session,
  shell,
};
