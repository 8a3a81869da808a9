// The fuzz targets run.mjs knows: name -> [module under test/fuzz/targets, factory export].
export const TARGETS = {
  formats: ['formats.ts', 'formatsTarget'],
  partitions: ['partitions.ts', 'partitionsTarget'],
  nbd: ['nbd.ts', 'nbdTarget'],
  nfs: ['nfs.ts', 'nfsTarget'],
  api: ['api.ts', 'apiTarget'],
  iscsi: ['iscsi.ts', 'iscsiTarget'],
  overlay: ['overlay.ts', 'overlayTarget'],
};
