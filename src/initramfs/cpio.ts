// A writer for the "newc" cpio format that the Linux kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst): each entry is a 110-byte ASCII
// header ("070701" and 13 eight-digit hex fields), the NUL-terminated name padded to 4 bytes,
// then the data padded to 4 bytes; the archive ends with an entry named "TRAILER!!!".

export interface CpioEntry {
  name: string;
  /** File type and permission bits, e.g. S_IFREG | 0o755. */
  mode: number;
  data?: Uint8Array;
  /** Target of a symbolic link (its data). */
  linkTarget?: string;
}

// sys/stat.h file types.
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

const MAGIC = "070701"; // buffer-format.rst: c_magic for newc
const HEADER_SIZE = 110;
const TRAILER = "TRAILER!!!";

const pad4 = (n: number): number => (4 - (n % 4)) % 4;
const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, "0");

export function writeCpio(entries: CpioEntry[], opts: { mtime?: number } = {}): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  let ino = 1;
  const mtime = opts.mtime ?? 0;
  const push = (name: string, mode: number, data: Uint8Array): void => {
    const nameBytes = enc.encode(name + "\0");
    const fields = [
      ino++, // c_ino
      mode, // c_mode
      0, // c_uid
      0, // c_gid
      (mode & S_IFDIR) === S_IFDIR ? 2 : 1, // c_nlink
      mtime, // c_mtime
      data.length, // c_filesize
      0, // c_maj
      0, // c_min
      0, // c_rmaj
      0, // c_rmin
      nameBytes.length, // c_namesize (including the NUL)
      0, // c_chksum (newc: zero)
    ];
    const header = MAGIC + fields.map(hex8).join("");
    parts.push(enc.encode(header));
    parts.push(nameBytes, new Uint8Array(pad4(HEADER_SIZE + nameBytes.length)));
    parts.push(data, new Uint8Array(pad4(data.length)));
  };
  for (const e of entries) {
    if (e.name.length === 0 || e.name.startsWith("/")) throw new Error(`cpio entry names are relative: "${e.name}"`);
    const data = e.linkTarget !== undefined ? enc.encode(e.linkTarget) : (e.data ?? new Uint8Array(0));
    push(e.name, e.mode, data);
  }
  ino = 0;
  push(TRAILER, 0, new Uint8Array(0));
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
