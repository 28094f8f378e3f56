// Node built-ins the ES-module programs (proxy, gateway, webhook) load without an `import`.
//
// node:http through process.getBuiltinModule rather than an `import`: an ES-module import of
// node:http builds a namespace from every export, which runs the lazy WebSocket/CloseEvent getters
// and so loads Node's bundled undici (~30 ms of start-up and ~12 MB of memory per process) that
// these programs never use. Types still come from `import type`.
export const http = process.getBuiltinModule('node:http');

// node:tls and node:https on first use: loading them adds ~7 MiB to the process (OpenSSL's TLS
// state; test/bench/programs.ts, "floor with TLS"), which a proxy that has intercepted nothing and
// has no gateway never needs. process.getBuiltinModule caches: a call is a map lookup.
export const tls = () => process.getBuiltinModule('node:tls');
export const https = () => process.getBuiltinModule('node:https');
