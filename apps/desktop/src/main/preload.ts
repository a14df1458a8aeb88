/**
 * The renderer's only door to the app: `window.meshrun.call(method, params)` and `subscribe(handler)`,
 * forwarded over IPC. Nothing else of Node or Electron is exposed (contextIsolation + sandbox are on).
 */
import { contextBridge, type IpcRendererEvent, ipcRenderer } from 'electron';
import { IPC_EVENT, IPC_RPC, type LiveEvent, type PreloadApi } from '../shared/api.ts';

const api: PreloadApi = {
  call: (method: string, params: unknown) => {
    if (typeof method !== 'string' || method.length > 64) return Promise.reject(new Error('bad method name'));
    return ipcRenderer.invoke(IPC_RPC, method, params ?? {});
  },
  subscribe: (handler: (event: LiveEvent) => void) => {
    const listener = (_event: IpcRendererEvent, live: LiveEvent) => handler(live);
    ipcRenderer.on(IPC_EVENT, listener);
    return () => {
      ipcRenderer.off(IPC_EVENT, listener);
    };
  },
};

contextBridge.exposeInMainWorld('meshrun', api);
