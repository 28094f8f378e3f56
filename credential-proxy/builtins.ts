// node:http through process.getBuiltinModule rather than an `import`: an ES-module import of
// node:http builds a namespace from every export, which runs the lazy WebSocket/CloseEvent getters
// and so loads Node's bundled undici (~30 ms of start-up and ~12 MB of memory per process) that
// this program never uses. Types still come from `import type`.
export const http = process.getBuiltinModule('node:http');
