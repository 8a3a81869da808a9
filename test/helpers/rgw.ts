/**
 * The one-node Ceph RGW of the S3 tests (../shared/notes/s3-ceph-rgw.md): tools/bench/rgw.mjs,
 * shared with the benchmark (tools/bench/s3.mjs). Ports and directory are picked fresh at every
 * start, so several test files and other users of the machine can run their own at once.
 */
export { freePort, hasRgw, killGatewayNow, RGW_ACCESS_KEY, RGW_SECRET_KEY, startRgw, type Rgw } from '../../tools/bench/rgw.mjs';
