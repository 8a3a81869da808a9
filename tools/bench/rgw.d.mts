/** Types of rgw.mjs (a one-node Ceph RGW for tests and benchmarks). */
export declare const RGW_ACCESS_KEY: string;
export declare const RGW_SECRET_KEY: string;

export interface Rgw {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  dir: string;
  /** AWS_* variables with the test user's keys (for child processes and the SDK). */
  env: Record<string, string>;
  /** Stops only the radosgw (an endpoint outage; the data stays). */
  stopGateway(): Promise<void>;
  startGateway(): Promise<void>;
  /** Stops every daemon started and removes the directory. */
  stop(): Promise<void>;
}

export declare function hasRgw(): boolean;
export declare function freePort(): Promise<number>;
export declare function startRgw(): Promise<Rgw>;
export declare function killGatewayNow(rgw: Rgw): void;
