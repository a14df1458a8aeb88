/** Values both the main process and the renderer use (no Node or DOM imports here). */

/** Default snooze length offered by the pause control. */
export const DEFAULT_SNOOZE_MS = 60 * 60 * 1000;
