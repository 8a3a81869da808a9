/**
 * What a verification boot takes from the VM configuration stored with a restore point: machine
 * type, firmware, disk bus, NIC model and memory. Three formats are read (libvirt domain XML,
 * VMware .vmx, Proxmox qemu-server .conf), each by looking for the few keys that matter, not by a
 * full parser: an unknown key is ignored, a missing one is guessed and named in `guessed`, so the
 * result always says which settings came from the backup and which did not.
 */

export type Firmware = 'bios' | 'uefi';
export type DiskBus = 'virtio' | 'ide' | 'sata' | 'scsi';
export type MachineType = 'pc' | 'q35';

export interface BootConfig {
  machine: MachineType;
  firmware: Firmware;
  bus: DiskBus;
  nic: 'virtio-net-pci' | 'e1000' | 'e1000e' | 'rtl8139' | 'vmxnet3';
  memoryMiB: number;
  /** The config file the settings came from (null: none stored with the point). */
  source: string | null;
  /** Settings not found in it, set to the defaults above. */
  guessed: string[];
}

export const BOOT_DEFAULTS: Omit<BootConfig, 'source' | 'guessed'> = { machine: 'pc', firmware: 'bios', bus: 'virtio', nic: 'virtio-net-pci', memoryMiB: 1024 };

type Found = Partial<Omit<BootConfig, 'source' | 'guessed'>>;

/** Picks the first config file of a known kind and reads it; `null` text means no config. */
export function bootConfig(files: ReadonlyArray<{ name: string; text: string }>): BootConfig {
  for (const f of files) {
    const found = parseVmConfig(f.name, f.text);
    if (found) return complete(found, f.name);
  }
  return complete({}, null);
}

function complete(found: Found, source: string | null): BootConfig {
  const guessed = (Object.keys(BOOT_DEFAULTS) as Array<keyof Found>).filter((k) => found[k] === undefined);
  return { ...BOOT_DEFAULTS, ...found, source, guessed } as BootConfig;
}

/** The settings one file gives, or undefined when it is of no known kind. */
export function parseVmConfig(name: string, text: string): Found | undefined {
  const lower = name.toLowerCase();
  if (lower.endsWith('.xml') || /<domain[\s>]/.test(text)) return parseLibvirt(text);
  if (lower.endsWith('.vmx')) return parseVmx(text);
  if (lower.endsWith('.conf') || /^\s*(scsihw|bootdisk|boot|ostype)\s*:/m.test(text)) return parseProxmox(text);
  return undefined;
}

function machineOf(s: string | undefined): MachineType | undefined {
  if (!s) return undefined;
  return /q35/i.test(s) ? 'q35' : /pc|i440fx/i.test(s) ? 'pc' : undefined;
}

function nicOf(s: string | undefined): BootConfig['nic'] | undefined {
  const m = s?.toLowerCase();
  if (!m) return undefined;
  if (m.startsWith('virtio')) return 'virtio-net-pci';
  if (m === 'e1000e') return 'e1000e';
  if (m.startsWith('e1000')) return 'e1000';
  if (m.startsWith('rtl8139')) return 'rtl8139';
  if (m.startsWith('vmxnet')) return 'vmxnet3';
  return undefined;
}

const attr = (tag: string, name: string): string | undefined => new RegExp(`\\b${name}\\s*=\\s*['"]([^'"]*)['"]`).exec(tag)?.[1];

function parseLibvirt(xml: string): Found {
  const out: Found = {};
  const type = /<type\b[^>]*>/.exec(xml)?.[0];
  out.machine = machineOf(type ? attr(type, 'machine') : undefined);
  const os = /<os\b[^>]*>/.exec(xml)?.[0];
  const loader = /<loader\b[^>]*>([^<]*)<\/loader>/.exec(xml);
  if ((os && attr(os, 'firmware') === 'efi') || (loader && /ovmf|efi/i.test(loader[0]))) out.firmware = 'uefi';
  else if (os || type) out.firmware = 'bios';
  const memory = /<(memory|currentMemory)\b([^>]*)>\s*(\d+)\s*</.exec(xml);
  if (memory) out.memoryMiB = toMiB(Number(memory[3]), attr(memory[2]!, 'unit') ?? 'KiB');
  const target = /<disk\b[^>]*device=['"]disk['"][^>]*>[\s\S]*?<target\b([^>]*)>/.exec(xml);
  const bus = target ? attr(target[1]!, 'bus') : undefined;
  if (bus === 'virtio' || bus === 'ide' || bus === 'sata' || bus === 'scsi') out.bus = bus;
  const model = /<interface\b[\s\S]*?<model\b([^>]*)>/.exec(xml);
  out.nic = nicOf(model ? attr(model[1]!, 'type') : undefined);
  return prune(out);
}

function parseVmx(text: string): Found {
  const kv = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([A-Za-z0-9_.:]+)\s*=\s*"?([^"]*)"?\s*$/.exec(line);
    if (m) kv.set(m[1]!.toLowerCase(), m[2]!);
  }
  const out: Found = {};
  const fw = kv.get('firmware');
  out.firmware = fw === 'efi' ? 'uefi' : fw === 'bios' ? 'bios' : undefined;
  if (kv.has('memsize')) out.memoryMiB = Number(kv.get('memsize'));
  // The first present controller with a disk: scsi0:0, sata0:0, ide0:0, nvme0:0.
  for (const [prefix, bus] of [['scsi0:0', 'scsi'], ['sata0:0', 'sata'], ['ide0:0', 'ide'], ['nvme0:0', 'virtio']] as const) {
    if (kv.get(`${prefix}.present`)?.toUpperCase() === 'TRUE' && /\.vmdk$/i.test(kv.get(`${prefix}.filename`) ?? '')) {
      out.bus = bus;
      break;
    }
  }
  out.nic = nicOf(kv.get('ethernet0.virtualdev'));
  // VMware's virtual hardware is an i440BX/PIIX board: QEMU's pc is the nearest.
  if (kv.has('virtualhw.version')) out.machine = 'pc';
  return prune(out);
}

function parseProxmox(text: string): Found {
  const kv = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    if (/^\s*\[/.test(line)) break; // snapshot sections follow the current configuration
    const m = /^\s*([a-z0-9]+)\s*:\s*(.*?)\s*$/.exec(line);
    if (m) kv.set(m[1]!, m[2]!);
  }
  const out: Found = {};
  out.machine = machineOf(kv.get('machine')) ?? (kv.size ? 'pc' : undefined);
  const bios = kv.get('bios');
  out.firmware = bios === 'ovmf' ? 'uefi' : bios === 'seabios' ? 'bios' : undefined;
  if (kv.has('memory')) out.memoryMiB = Number(kv.get('memory'));
  const bootdisk = kv.get('bootdisk') ?? /order=([a-z]+\d+)/.exec(kv.get('boot') ?? '')?.[1];
  const bus = (bootdisk ?? [...kv.keys()].find((k) => /^(virtio|scsi|sata|ide)\d+$/.test(k)))?.replace(/\d+$/, '');
  if (bus === 'virtio' || bus === 'scsi' || bus === 'sata' || bus === 'ide') out.bus = bus;
  out.nic = nicOf(/^([a-z0-9]+)/.exec(kv.get('net0') ?? '')?.[1]);
  return prune(out);
}

function toMiB(n: number, unit: string): number {
  const u = unit.toLowerCase();
  const factor: Record<string, number> = { b: 1 / 1048576, bytes: 1 / 1048576, k: 1 / 1024, kib: 1 / 1024, kb: 1000 / 1048576, m: 1, mib: 1, mb: 1e6 / 1048576, g: 1024, gib: 1024, gb: 1e9 / 1048576 };
  return Math.round(n * (factor[u] ?? 1 / 1024));
}

function prune(f: Found): Found {
  const out: Found = {};
  for (const [k, v] of Object.entries(f)) {
    if (v === undefined || (typeof v === 'number' && !(Number.isFinite(v) && v > 0))) continue;
    (out as Record<string, unknown>)[k] = v;
  }
  return out;
}
