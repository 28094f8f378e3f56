// The byte pump of a tunnel, shared by the credential proxy's plain tunnels and the egress gateway.
//
// Upstream → client (downloads, the bulk of tunnel traffic) skips the Readable stream layer: the
// upstream socket is opened with net.connect's `onread`, so libuv reads straight into a pooled
// 64 KiB buffer, each read is written to the client as it is, and the buffer goes back to the pool
// once its write is done. pipe() instead allocates a fresh buffer per read and leaves the GC to
// reclaim it; in the gateway that garbage collection was the largest cost after the write syscalls
// (profiled with --cpu-prof; figures in test/bench/README.md, bench:gateway).
//
// Client → upstream stays pipe(): the client socket is an accepted one (node:net offers `onread`
// to net.connect only), so its reads come as 'data' chunks either way, and pipe() already pauses
// the client while the upstream's write queue is full. A hand-written 'data' relay with
// pause/resume measured no better (2 GiB uploads over loopback, medians of 5: 0.78 CPU-s/GiB with
// pipe(), 0.80 without).
//
// Memory per tunnel is bounded whatever the peers do: a client that never reads pins at most
// RELAY_BUFFERS × RELAY_BUFFER_BYTES (128 KiB) of download buffers in flight, since the upstream
// socket is paused until the client drains, plus the one buffer node:net keeps armed for the next
// read (every open upstream socket holds one from its start; a fresh one is not resident until
// bytes land in it, so an idle tunnel costs ~20 KiB, bench:gateway); an upstream that never reads pins the upload pipe's queues (its
// high-water marks plus the read in hand). The pool of free buffers is shared by every tunnel and
// capped, so a burst leaves at most MAX_FREE_BUFFERS × RELAY_BUFFER_BYTES (4 MiB) behind.
import type { OnReadOpts, Socket } from 'node:net';

/** Size of one download read buffer, and how many one tunnel may have in flight to its client. */
export const RELAY_BUFFER_BYTES = 64 * 1024;
export const RELAY_BUFFERS = 2;

/** Free buffers, shared by every tunnel: a tunnel holds buffers only while bytes are in flight. */
const FREE_BUFFERS: Buffer[] = [];
const MAX_FREE_BUFFERS = 64;

const take = (): Buffer => FREE_BUFFERS.pop() ?? Buffer.allocUnsafeSlow(RELAY_BUFFER_BYTES);
const recycle = (buf: Buffer): void => {
  if (FREE_BUFFERS.length < MAX_FREE_BUFFERS) FREE_BUFFERS.push(buf);
};

/**
 * Upstream → client bytes of one tunnel. Pass `onread` to net.connect for the upstream socket, set
 * `source` to that socket, and call start() once the client may receive bytes. Backpressure: when
 * the client is slow (write() returns false, or RELAY_BUFFERS are in flight) the upstream socket
 * is paused until the client drains.
 */
export class DownloadRelay {
  source: Socket | undefined;
  readonly #client: Socket;
  #inFlight = 0;
  #started = false;
  #waiting = false;
  /** Bytes read before the client side was ready (none in practice: the upstream speaks after the client). */
  readonly #early: Buffer[] = [];

  constructor(client: Socket) {
    this.#client = client;
  }

  readonly onread: OnReadOpts = {
    buffer: take,
    callback: (n: number, buf: Uint8Array): boolean => this.#relay(n, buf as Buffer),
  };

  #relay(n: number, buf: Buffer): boolean {
    const chunk = buf.subarray(0, n);
    if (!this.#started) {
      this.#early.push(Buffer.from(chunk));
      recycle(buf);
      return true;
    }
    if (this.#client.destroyed) {
      recycle(buf);
      return false;
    }
    this.#inFlight++;
    const more = this.#client.write(chunk, () => this.#release(buf));
    if (!more || this.#inFlight >= RELAY_BUFFERS) return this.#pause(!more);
    return true;
  }

  #release(buf: Buffer): void {
    this.#inFlight--;
    recycle(buf);
    if (this.#waiting && this.#client.writableLength === 0) this.#resume();
  }

  /**
   * Stops reading the upstream until the client catches up: at its 'drain' when the write said so
   * (only a refused write is followed by one), else when the last buffer in flight is released.
   */
  #pause(awaitDrain: boolean): false {
    this.#waiting = true;
    if (awaitDrain) this.#client.once('drain', () => this.#resume());
    return false;
  }

  #resume(): void {
    if (!this.#waiting) return;
    this.#waiting = false;
    this.source?.resume();
  }

  /** The client has its 200: relay from now on. */
  start(): void {
    this.#started = true;
    for (const chunk of this.#early.splice(0)) this.#client.write(chunk);
  }
}

/**
 * Both directions once the tunnel is open: `head` (bytes the client sent after its CONNECT) goes
 * first, then the client's bytes by pipe() and the upstream's by `download`.
 */
export function startRelay(client: Socket, upstream: Socket, download: DownloadRelay, head: Buffer): void {
  if (head.length > 0) upstream.write(head);
  client.pipe(upstream);
  download.start();
}
