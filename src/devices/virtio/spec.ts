// Numbers from the virtio 1.2 specification (OASIS, July 2022), each with its section.
// Nothing here has behaviour: the transport, the virtqueue and the device models import names.

// ---- Device status field. virtio 1.2 §2.1 ----
export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_DEVICE_NEEDS_RESET = 64;
export const STATUS_FAILED = 128;

// ---- Reserved feature bits. virtio 1.2 §6 ----
export const F_RING_INDIRECT_DESC = 28; // VIRTIO_RING_F_INDIRECT_DESC
export const F_RING_EVENT_IDX = 29; // VIRTIO_RING_F_EVENT_IDX
export const F_VERSION_1 = 32; // VIRTIO_F_VERSION_1

/** A feature bit as a 64-bit mask. */
export const bit = (n: number): bigint => 1n << BigInt(n);

// ---- Device IDs. virtio 1.2 §5 ----
export const DEVICE_ID_NONE = 0; // §4.2.3.1.1: DeviceID 0 means "no device here"
export const DEVICE_ID_BLOCK = 2;

// ---- virtio-mmio register offsets (version 2). virtio 1.2 §4.2.2, table "MMIO Device Register Layout" ----
export const MMIO_MAGIC_VALUE = 0x000;
export const MMIO_VERSION = 0x004;
export const MMIO_DEVICE_ID = 0x008;
export const MMIO_VENDOR_ID = 0x00c;
export const MMIO_DEVICE_FEATURES = 0x010;
export const MMIO_DEVICE_FEATURES_SEL = 0x014;
export const MMIO_DRIVER_FEATURES = 0x020;
export const MMIO_DRIVER_FEATURES_SEL = 0x024;
export const MMIO_LEGACY_GUEST_PAGE_SIZE = 0x028; // §4.2.4 legacy interface only
export const MMIO_QUEUE_SEL = 0x030;
export const MMIO_QUEUE_NUM_MAX = 0x034;
export const MMIO_QUEUE_NUM = 0x038;
export const MMIO_LEGACY_QUEUE_ALIGN = 0x03c; // §4.2.4 legacy interface only
export const MMIO_LEGACY_QUEUE_PFN = 0x040; // §4.2.4 legacy interface only
export const MMIO_QUEUE_READY = 0x044;
export const MMIO_QUEUE_NOTIFY = 0x050;
export const MMIO_INTERRUPT_STATUS = 0x060;
export const MMIO_INTERRUPT_ACK = 0x064;
export const MMIO_STATUS = 0x070;
export const MMIO_QUEUE_DESC_LOW = 0x080;
export const MMIO_QUEUE_DESC_HIGH = 0x084;
export const MMIO_QUEUE_DRIVER_LOW = 0x090;
export const MMIO_QUEUE_DRIVER_HIGH = 0x094;
export const MMIO_QUEUE_DEVICE_LOW = 0x0a0;
export const MMIO_QUEUE_DEVICE_HIGH = 0x0a4;
export const MMIO_SHM_SEL = 0x0ac;
export const MMIO_SHM_LEN_LOW = 0x0b0;
export const MMIO_SHM_LEN_HIGH = 0x0b4;
export const MMIO_SHM_BASE_LOW = 0x0b8;
export const MMIO_SHM_BASE_HIGH = 0x0bc;
export const MMIO_QUEUE_RESET = 0x0c0;
export const MMIO_CONFIG_GENERATION = 0x0fc;
export const MMIO_CONFIG = 0x100;

/** "virt" in little-endian. virtio 1.2 §4.2.2 MagicValue. */
export const MMIO_MAGIC = 0x74726976;
/** The modern interface; 1 is the legacy one (§4.2.4), which we do not offer. virtio 1.2 §4.2.2 Version. */
export const MMIO_VERSION_MODERN = 2;
/** InterruptStatus bits. virtio 1.2 §4.2.2 InterruptStatus. */
export const INT_USED_BUFFER = 1;
export const INT_CONFIG_CHANGE = 2;

// ---- Split virtqueue. virtio 1.2 §2.7 ----
/** Queue Size is a power of 2 of at most 32768. virtio 1.2 §2.7 */
export const QUEUE_SIZE_MAX = 32768;
export const DESC_SIZE = 16; // struct virtq_desc §2.7.5
export const DESC_F_NEXT = 1; // §2.7.5
export const DESC_F_WRITE = 2; // §2.7.5
export const DESC_F_INDIRECT = 4; // §2.7.5
export const AVAIL_F_NO_INTERRUPT = 1; // §2.7.6
export const USED_F_NO_NOTIFY = 1; // §2.7.8
export const USED_ELEM_SIZE = 8; // struct virtq_used_elem §2.7.8
/** Alignment of the three parts. virtio 1.2 §2.7, table "Virtqueue Part Alignment". */
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;
/** A chain is at most 2^32 bytes in total. virtio 1.2 §2.7.4.1 */
export const CHAIN_BYTES_MAX = 2 ** 32;

// ---- Block device. virtio 1.2 §5.2 ----
export const BLK_F_SIZE_MAX = 1; // §5.2.3
export const BLK_F_SEG_MAX = 2;
export const BLK_F_GEOMETRY = 4;
export const BLK_F_RO = 5;
export const BLK_F_BLK_SIZE = 6;
export const BLK_F_FLUSH = 9;
export const BLK_F_TOPOLOGY = 10;
export const BLK_F_CONFIG_WCE = 11;
export const BLK_F_MQ = 12;
export const BLK_F_DISCARD = 13;
export const BLK_F_WRITE_ZEROES = 14;

export const BLK_T_IN = 0; // §5.2.6
export const BLK_T_OUT = 1;
export const BLK_T_FLUSH = 4;
export const BLK_T_GET_ID = 8;
export const BLK_T_GET_LIFETIME = 10;
export const BLK_T_DISCARD = 11;
export const BLK_T_WRITE_ZEROES = 13;
export const BLK_T_SECURE_ERASE = 14;

export const BLK_S_OK = 0; // §5.2.6
export const BLK_S_IOERR = 1;
export const BLK_S_UNSUPP = 2;

/** Sectors are 512 bytes whatever blk_size says. virtio 1.2 §5.2.6 */
export const BLK_SECTOR_SIZE = 512;
/** struct virtio_blk_req header: type u32, reserved u32, sector u64. virtio 1.2 §5.2.6 */
export const BLK_REQ_HEADER_SIZE = 16;
/** GET_ID answers at most 20 bytes, not NUL-terminated when all used. virtio 1.2 §5.2.6 */
export const BLK_ID_BYTES = 20;
/** struct virtio_blk_discard_write_zeroes: sector u64, num_sectors u32, flags u32. virtio 1.2 §5.2.6 */
export const BLK_DWZ_SEGMENT_SIZE = 16;
export const BLK_DWZ_F_UNMAP = 1; // §5.2.6 flags.unmap

// struct virtio_blk_config field offsets. virtio 1.2 §5.2.4
export const BLK_CFG_CAPACITY = 0; // le64
export const BLK_CFG_SIZE_MAX = 8; // le32
export const BLK_CFG_SEG_MAX = 12; // le32
export const BLK_CFG_GEOMETRY = 16; // cylinders le16, heads u8, sectors u8
export const BLK_CFG_BLK_SIZE = 20; // le32
export const BLK_CFG_TOPOLOGY = 24; // 8 bytes
export const BLK_CFG_WRITEBACK = 32; // u8
export const BLK_CFG_NUM_QUEUES = 34; // le16
export const BLK_CFG_MAX_DISCARD_SECTORS = 36; // le32
export const BLK_CFG_MAX_DISCARD_SEG = 40; // le32
export const BLK_CFG_DISCARD_SECTOR_ALIGNMENT = 44; // le32
export const BLK_CFG_MAX_WRITE_ZEROES_SECTORS = 48; // le32
export const BLK_CFG_MAX_WRITE_ZEROES_SEG = 52; // le32
export const BLK_CFG_WRITE_ZEROES_MAY_UNMAP = 56; // u8
/** Bytes of the config through write_zeroes_may_unmap and its padding. virtio 1.2 §5.2.4 */
export const BLK_CONFIG_SIZE = 60;
