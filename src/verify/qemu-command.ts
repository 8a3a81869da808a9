/**
 * The QEMU command line of a verification boot, built from the boot configuration (vm-config.ts)
 * and the run's files. Pure: the runner spawns what this returns.
 *  - no display; the screen exists (a VGA card) for `screendump`;
 *  - the guest starts paused (-S) so the serial console and QMP are connected before it runs;
 *  - disks are the run's NBD exports (the overlays), in the point's order, the first one bootable;
 *    virtio disks (and the virtio-scsi controller) run in an I/O thread: QEMU's NBD client then
 *    answers the guest without taking the big lock from the vCPU thread. Under TCG the boot loader's
 *    ~700 small BIOS reads otherwise cost ~2 s more than from a local file (measured with
 *    qemu-nbd too); IDE and AHCI cannot use one;
 *  - network: an isolated user-mode network (restrict=on: the guest reaches nothing) with only
 *    the forwarded TCP ports of the probes, on 127.0.0.1;
 *  - a virtio-serial port for qemu-guest-agent;
 *  - -no-reboot: a guest that resets (a triple fault, a reboot loop) ends QEMU, which the runner
 *    sees at once instead of waiting for the timeout.
 */
import path from 'node:path';
import type { BootConfig } from './vm-config.js';

export interface QemuRunFiles {
  dir: string;
  qmp: string;
  serial: string;
  agent: string;
  pidFile: string;
  nbdSocket: string;
  /** UEFI only: the firmware code and a copy of the variable store (in the run directory). */
  ovmf?: { code: string; vars: string };
}

export interface QemuPlan {
  accel: 'kvm' | 'tcg';
  boot: BootConfig;
  memoryMiB: number;
  /** NBD export names, one per disk, in boot order. */
  exports: string[];
  /** guest port -> host port on 127.0.0.1 */
  forwards: Array<{ guest: number; host: number }>;
  name: string;
}

export function qemuArgs(plan: QemuPlan, files: QemuRunFiles): string[] {
  const b = plan.boot;
  const args = [
    '-name', plan.name,
    '-machine', `${b.machine},accel=${plan.accel}`,
    '-m', `${plan.memoryMiB}M`,
    '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'std',
    '-S', '-no-reboot',
    '-qmp', `unix:${files.qmp},server=on,wait=off`,
    '-chardev', `socket,id=serial0,path=${files.serial},server=on,wait=off`,
    '-serial', 'chardev:serial0',
    '-pidfile', files.pidFile,
  ];
  if (plan.accel === 'kvm') args.push('-cpu', 'host');
  if (b.firmware === 'uefi' && files.ovmf) {
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${files.ovmf.code}`, '-drive', `if=pflash,format=raw,unit=1,file=${files.ovmf.vars}`);
  }
  const iothread = b.bus === 'virtio' || b.bus === 'scsi' ? ',iothread=io0' : '';
  if (iothread) args.push('-object', 'iothread,id=io0');
  if (b.bus === 'scsi') args.push('-device', `virtio-scsi-pci,id=scsi0${iothread}`);
  if (b.bus === 'sata' && b.machine !== 'q35') args.push('-device', 'ahci,id=ahci0');
  plan.exports.forEach((exp, i) => {
    const node = `disk${i}`;
    args.push('-blockdev', `driver=nbd,node-name=${node},server.type=unix,server.path=${files.nbdSocket},export=${exp},cache.direct=off`);
    const boot = `bootindex=${i + 1}`;
    if (b.bus === 'virtio') args.push('-device', `virtio-blk-pci,drive=${node},${boot}${iothread}`);
    else if (b.bus === 'scsi') args.push('-device', `scsi-hd,drive=${node},bus=scsi0.0,${boot}`);
    else if (b.bus === 'sata') args.push('-device', `ide-hd,drive=${node},bus=${b.machine === 'q35' ? 'ide' : 'ahci0'}.${i},${boot}`);
    else args.push('-device', `ide-hd,drive=${node},bus=ide.${Math.floor(i / 2)},unit=${i % 2},${boot}`);
  });
  const fwd = plan.forwards.map((f) => `,hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`).join('');
  args.push('-netdev', `user,id=net0,restrict=on${fwd}`, '-device', `${b.nic},netdev=net0`);
  args.push(
    '-chardev', `socket,id=qga0,path=${files.agent},server=on,wait=off`,
    '-device', 'virtio-serial-pci,id=vser0',
    '-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
  );
  return args;
}

export function runFiles(dir: string): QemuRunFiles {
  return {
    dir,
    qmp: path.join(dir, 'qmp.sock'),
    serial: path.join(dir, 'serial.sock'),
    agent: path.join(dir, 'qga.sock'),
    pidFile: path.join(dir, 'qemu.pid'),
    nbdSocket: path.join(dir, 'nbd.sock'),
  };
}
