import { describe, expect, it } from 'vitest';
import { bootConfig } from '../../../src/verify/vm-config.js';
import { qemuArgs, runFiles } from '../../../src/verify/qemu-command.js';

const LIBVIRT = `<domain type='kvm'>
  <name>web</name>
  <memory unit='KiB'>2097152</memory>
  <os firmware='efi'><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/web.qcow2'/><target dev='sda' bus='scsi'/></disk>
    <interface type='network'><source network='default'/><model type='e1000e'/></interface>
  </devices>
</domain>`;

const VMX = `.encoding = "UTF-8"
virtualHW.version = "19"
memSize = "4096"
firmware = "efi"
scsi0.present = "TRUE"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "win.vmdk"
ethernet0.virtualDev = "vmxnet3"
`;

const PROXMOX = `boot: order=virtio0;net0
memory: 512
net0: virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0
ostype: l26
virtio0: local-lvm:vm-100-disk-0,size=8G

[snap1]
memory: 8192
`;

describe('VM configuration of a verification boot', () => {
  it('reads libvirt XML: machine, firmware, memory, the disk bus (not the cdrom\'s), NIC', () => {
    expect(bootConfig([{ name: 'web.xml', text: LIBVIRT }])).toEqual({ machine: 'q35', firmware: 'uefi', bus: 'scsi', nic: 'e1000e', memoryMiB: 2048, source: 'web.xml', guessed: [] });
  });
  it('reads .vmx and says the machine type is a guess of the nearest', () => {
    expect(bootConfig([{ name: 'win.vmx', text: VMX }])).toMatchObject({ machine: 'pc', firmware: 'uefi', bus: 'scsi', nic: 'vmxnet3', memoryMiB: 4096, guessed: [] });
  });
  it('reads a Proxmox .conf up to its first snapshot section; a missing key is guessed', () => {
    expect(bootConfig([{ name: '100.conf', text: PROXMOX }])).toMatchObject({ machine: 'pc', bus: 'virtio', nic: 'virtio-net-pci', memoryMiB: 512, guessed: ['firmware'] });
  });
  it('guesses everything when no configuration was stored', () => {
    expect(bootConfig([{ name: 'notes.txt', text: 'hello' }])).toEqual({ machine: 'pc', firmware: 'bios', bus: 'virtio', nic: 'virtio-net-pci', memoryMiB: 1024, source: null, guessed: ['machine', 'firmware', 'bus', 'nic', 'memoryMiB'] });
  });

  it('builds a QEMU command line: paused, isolated network with only the forwards, disks on the bus', () => {
    const boot = bootConfig([{ name: 'web.xml', text: LIBVIRT }]);
    const files = { ...runFiles('/d/run'), ovmf: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/d/run/OVMF_VARS.fd' } };
    const args = qemuArgs({ accel: 'tcg', boot, memoryMiB: 256, exports: ['verify/x/sda', 'verify/x/sdb'], forwards: [{ guest: 22, host: 40022 }], name: 'n' }, files).join(' ');
    expect(args).toContain('-machine q35,accel=tcg');
    expect(args).toContain('-m 256M');
    expect(args).toContain(' -S ');
    expect(args).toContain('-no-reboot');
    expect(args).toContain('user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22');
    expect(args).toContain('-device e1000e,netdev=net0');
    expect(args).toContain('-object iothread,id=io0 -device virtio-scsi-pci,id=scsi0,iothread=io0');
    expect(args).toContain('export=verify/x/sdb');
    expect(args).toContain('-device scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1');
    expect(args).toContain('if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd');
    expect(args).not.toContain('-cpu host');
  });

  it('runs virtio disks in an I/O thread, IDE disks (which cannot) without one', () => {
    const files = runFiles('/d/run');
    const plan = { accel: 'tcg' as const, memoryMiB: 256, exports: ['verify/x/sda'], forwards: [], name: 'n' };
    const virtio = qemuArgs({ ...plan, boot: bootConfig([]) }, files).join(' ');
    expect(virtio).toContain('-object iothread,id=io0');
    expect(virtio).toContain('-device virtio-blk-pci,drive=disk0,bootindex=1,iothread=io0');
    const ide = qemuArgs({ ...plan, boot: { ...bootConfig([]), bus: 'ide' } }, files).join(' ');
    expect(ide).not.toContain('iothread');
    expect(ide).toContain('-device ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1');
  });
});
