// Numbers of the virtio network device from the virtio 1.2 specification (OASIS, July 2022),
// §5.1, each with its section. Pure data: device.ts and the tests import names.
// The same values are in <linux/virtio_net.h> (VIRTIO_NET_F_*, VIRTIO_NET_HDR_*).

/** Device ID of the network card. virtio 1.2 §5.1.1 */
export const DEVICE_ID_NET = 1;

// ---- Virtqueues. virtio 1.2 §5.1.2: receiveq1 = 0, transmitq1 = 1 (controlq only with CTRL_VQ, not offered) ----
export const NET_RX_QUEUE = 0;
export const NET_TX_QUEUE = 1;
export const NET_NUM_QUEUES = 2;

// ---- Feature bits. virtio 1.2 §5.1.3 ----
export const NET_F_CSUM = 0; // device handles packets with partial checksum
export const NET_F_GUEST_CSUM = 1; // driver handles packets with partial checksum
export const NET_F_MAC = 5; // device has given MAC address
export const NET_F_GUEST_TSO4 = 7; // driver can receive TSOv4
export const NET_F_GUEST_TSO6 = 8; // driver can receive TSOv6
export const NET_F_GUEST_ECN = 9; // driver can receive TSO with ECN (not offered)
export const NET_F_GUEST_UFO = 10; // driver can receive UFO
export const NET_F_HOST_TSO4 = 11; // device can receive TSOv4
export const NET_F_HOST_TSO6 = 12; // device can receive TSOv6
export const NET_F_HOST_ECN = 13; // device can receive TSO with ECN (not offered)
export const NET_F_HOST_UFO = 14; // device can receive UFO
export const NET_F_MRG_RXBUF = 15; // driver can merge receive buffers
export const NET_F_STATUS = 16; // config status field available (not offered)

// ---- Device configuration layout. virtio 1.2 §5.1.4: struct virtio_net_config ----
/** u8 mac[6] at offset 0; "always exists" (§5.1.4), valid with VIRTIO_NET_F_MAC. */
export const NET_CFG_MAC = 0;
export const MAC_BYTES = 6;
/** We offer none of STATUS/MQ/MTU/SPEED_DUPLEX/RSS, so the config is the mac alone. */
export const NET_CONFIG_SIZE = 6;

// ---- struct virtio_net_hdr. virtio 1.2 §5.1.6 ----
/** flags u8, gso_type u8, hdr_len le16, gso_size le16, csum_start le16, csum_offset le16, num_buffers le16:
 * 12 bytes with VIRTIO_F_VERSION_1 (§5.1.6.1: only legacy drivers without MRG_RXBUF used 10). */
export const NET_HDR_SIZE = 12;
export const NET_HDR_FLAGS = 0;
export const NET_HDR_GSO_TYPE = 1;
export const NET_HDR_HDR_LEN = 2;
export const NET_HDR_GSO_SIZE = 4;
export const NET_HDR_CSUM_START = 6;
export const NET_HDR_CSUM_OFFSET = 8;
export const NET_HDR_NUM_BUFFERS = 10;

export const NET_HDR_F_NEEDS_CSUM = 1; // §5.1.6
export const NET_HDR_F_DATA_VALID = 2; // §5.1.6
export const NET_HDR_F_RSC_INFO = 4; // §5.1.6 (only with RSC_EXT, not offered)

export const NET_HDR_GSO_NONE = 0; // §5.1.6
export const NET_HDR_GSO_TCPV4 = 1;
export const NET_HDR_GSO_UDP = 3;
export const NET_HDR_GSO_TCPV6 = 4;
export const NET_HDR_GSO_UDP_L4 = 5; // USO, not offered
export const NET_HDR_GSO_ECN = 0x80;

// ---- Sizes. virtio 1.2 §5.1.6.3 (Setting Up Receive Buffers) ----
/**
 * The largest packet the device ever moves, header not counted. §5.1.6.3 sizes the largest
 * incoming packet at 65550 bytes (the largest TCP or UDP packet, 65536, plus a 14-byte Ethernet
 * header); with the 12-byte header that is the 65562-byte receive buffer §5.1.6.3.1 asks of a
 * driver without MRG_RXBUF that takes GUEST_TSO4/TSO6/UFO. We bound TX by the same number: Linux
 * never sends a larger GSO frame (its gso_max_size is 65536), and the host TAP must never be
 * handed a write of unbounded size.
 */
export const NET_FRAME_MAX = 65550;
