/* nsm.c — ring-3 virtio-nsm driver (device ID 33, DESIGN.md §5), polling; the `nsm` test.
 * Framing as Linux drivers/misc/nsm.c sends it (and QEMU 9.x hw/virtio/virtio-nsm.c expects):
 * the CBOR request as one device-readable chain, then a 0x3000-byte device-writable chain for the
 * response, one kick; two used entries come back, the request's (len 0), then the response's.
 * CBOR (RFC 8949): just enough to write the requests and find fields in the responses. */
#include "virtio.h"

#define DEVICE_ID_NSM          33      /* Linux include/uapi/linux/virtio_ids.h VIRTIO_ID_NITRO_SEC_MOD */
#define NSM_REQUEST_MAX_SIZE   0x1000  /* Linux include/uapi/linux/nsm.h */
#define NSM_RESPONSE_MAX_SIZE  0x3000  /* Linux include/uapi/linux/nsm.h; QEMU requires exactly this */
#define NSM_DMA_BASE  (PROBE_DMA_BASE + 0x500000ULL) /* 21 MiB: rings, request, response */
#define NSM_DMA_SIZE  0x10000ULL
#define NSM_REQ_OFF   0x4000ULL
#define NSM_RESP_OFF  0x5000ULL
#define NSM_EXTEND_PCR 16              /* first PCR a guest may extend (DESIGN.md §5) */
#define NONCE_MAX     512              /* nsm-api docs/attestation_process.md §3.2.2.2 */

/* ---- CBOR writer ------------------------------------------------------------- */
struct cw { u8 *p; u32 n, cap; int err; };
static void cw_head(struct cw *w, u32 major, u64 v) {
    u8 h[9]; u32 k;
    if (v < 24) { h[0] = (u8)(major << 5 | v); k = 1; }
    else if (v < 0x100) { h[0] = (u8)(major << 5 | 24); h[1] = (u8)v; k = 2; }
    else if (v < 0x10000) { h[0] = (u8)(major << 5 | 25); h[1] = (u8)(v >> 8); h[2] = (u8)v; k = 3; }
    else { h[0] = (u8)(major << 5 | 26); h[1] = (u8)(v >> 24); h[2] = (u8)(v >> 16); h[3] = (u8)(v >> 8); h[4] = (u8)v; k = 5; }
    if (w->n + k > w->cap) { w->err = 1; return; }
    memcpy(w->p + w->n, h, k); w->n += k;
}
static void cw_raw(struct cw *w, const u8 *p, u32 n) {
    if (w->n + n > w->cap) { w->err = 1; return; }
    memcpy(w->p + w->n, p, n); w->n += n;
}
static void cw_text(struct cw *w, const char *s) { u32 n = (u32)strnlen_(s, 64); cw_head(w, 3, n); cw_raw(w, (const u8 *)s, n); }
static void cw_bytes(struct cw *w, const u8 *p, u32 n) { cw_head(w, 2, n); cw_raw(w, p, n); }

/* ---- CBOR reader (definite lengths only, as serde and QEMU write them) ------------- */
struct cr { const u8 *p; u32 n, i; int err; };
static int cr_head(struct cr *r, u32 *major, u64 *v) {
    if (r->i >= r->n) return r->err = 1, 0;
    u8 b = r->p[r->i++]; u32 ai = b & 31, k;
    *major = b >> 5;
    if (ai < 24) { *v = ai; return 1; }
    if (ai == 24) k = 1; else if (ai == 25) k = 2; else if (ai == 26) k = 4; else if (ai == 27) k = 8; else return r->err = 1, 0;
    if (r->n - r->i < k) return r->err = 1, 0;
    u64 x = 0;
    for (u32 j = 0; j < k; j++) x = x << 8 | r->p[r->i++];
    *v = x;
    return 1;
}
static int cr_skip(struct cr *r, int depth) {
    u32 m; u64 v;
    if (depth > 16 || !cr_head(r, &m, &v)) return r->err = 1, 0;
    if (m == 2 || m == 3) { if (v > r->n - r->i) return r->err = 1, 0; r->i += (u32)v; return 1; }
    if (m == 4) { for (u64 j = 0; j < v; j++) if (!cr_skip(r, depth + 1)) return 0; return 1; }
    if (m == 5) { for (u64 j = 0; j < 2 * v; j++) if (!cr_skip(r, depth + 1)) return 0; return 1; }
    if (m == 6) return cr_skip(r, depth + 1);   /* tag: skip the tagged item */
    return 1;                                    /* ints, simple values, floats: head only */
}
/* With r at a map: leaves r at the value of text key `key`; 0 when absent. */
static int cr_find(struct cr *r, const char *key) {
    u32 m; u64 cnt, klen = strnlen_(key, 64);
    if (!cr_head(r, &m, &cnt) || m != 5) return 0;
    for (u64 j = 0; j < cnt; j++) {
        u32 km; u64 kl; u32 at = r->i;
        if (!cr_head(r, &km, &kl)) return 0;
        if (km == 3 && kl == klen && kl <= r->n - r->i && memcmp(r->p + r->i, key, klen) == 0) { r->i += (u32)kl; return 1; }
        r->i = at;
        if (!cr_skip(r, 0) || !cr_skip(r, 0)) return 0;
    }
    return 0;
}
/* A byte or text string at r: pointer and length. */
static int cr_str(struct cr *r, u32 want_major, const u8 **p, u32 *n) {
    u32 m; u64 v;
    if (!cr_head(r, &m, &v) || m != want_major || v > r->n - r->i) return 0;
    *p = r->p + r->i; *n = (u32)v; r->i += (u32)v;
    return 1;
}

/* ---- one request --------------------------------------------------------------- */
static struct vq nsmq;
static u8 *req_buf(void) { return (u8 *)(usize)(NSM_DMA_BASE + NSM_REQ_OFF); }
static u8 *resp_buf(void) { return (u8 *)(usize)(NSM_DMA_BASE + NSM_RESP_OFF); }

/* Sends req_buf[0..n); returns the response length, or -1 (timeout / framing). */
static long nsm_call(u32 n) {
    struct vq_buf rq = { NSM_DMA_BASE + NSM_REQ_OFF, n, 0 };
    struct vq_buf rs = { NSM_DMA_BASE + NSM_RESP_OFF, NSM_RESPONSE_MAX_SIZE, 1 };
    nsmq.next_desc = 0;
    u32 h1 = vq_add(&nsmq, &rq, 1);
    u32 h2 = vq_add(&nsmq, &rs, 1);
    vq_kick(&nsmq);
    u32 id, len, id2, len2;
    if (!vq_take(&nsmq, &id, &len) || !vq_take(&nsmq, &id2, &len2)) return -1;
    if (id != h1 || id2 != h2 || len2 > NSM_RESPONSE_MAX_SIZE) return -1;
    return (long)len2;
}

/* What the report keeps of a response is copied out: the next response overwrites the buffer. */
#define KEEP_MAX 128
static u8 module_id[KEEP_MAX], error_code[KEEP_MAX];
static u32 error_len;          /* the first {"Error": code} of the run */
static u32 keep(u8 *dst, const u8 *src, u32 n) { if (n > KEEP_MAX) n = KEEP_MAX; memcpy(dst, src, n); return n; }

/* The response's root: a map(1) whose key is `name` (then r sits at its value), or {"Error": code}. */
static int nsm_root(struct cr *r, u32 n, const char *name) {
    r->p = resp_buf(); r->n = n; r->i = 0; r->err = 0;
    struct cr e = *r;
    const u8 *ep; u32 en;
    if (cr_find(&e, "Error") && cr_str(&e, 3, &ep, &en)) {
        if (!error_len) error_len = keep(error_code, ep, en);
        return 0;
    }
    return cr_find(r, name);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
/* probe.nsm.<key>=<hex>: 1 with the bytes, 1 with n=0 when absent, 0 (and an error line) when bad. */
static int opt_hex(const struct boot_facts *f, const char *key, u8 *out, u32 max, u32 *n) {
    usize len = 0;
    const char *v = opt_get(f, key, &len);
    *n = 0;
    if (!v) return 1;
    if (len % 2 || len / 2 > max) goto bad;
    for (usize i = 0; i < len; i += 2) {
        int a = hexval(v[i]), b = hexval(v[i + 1]);
        if (a < 0 || b < 0) goto bad;
        out[i / 2] = (u8)(a << 4 | b);
    }
    *n = (u32)(len / 2);
    return 1;
bad:
    line_begin("error"); kv_str("bad_option", key); line_end();
    return 0;
}

static const u8 EXTEND_DATA[] = "probe-nsm";   /* PCR16 = SHA384(0^48 || SHA384("probe-nsm")), 9 bytes, no NUL */
static u8 nonce[NONCE_MAX], user_data[NONCE_MAX];


int test_nsm(const struct boot_facts *f) {
    u32 nonce_n, ud_n;
    if (!opt_hex(f, "probe.nsm.nonce", nonce, NONCE_MAX, &nonce_n) || !opt_hex(f, "probe.nsm.user_data", user_data, NONCE_MAX, &ud_n)) return 1;
    if (!phys_is_ram(f, NSM_DMA_BASE, NSM_DMA_SIZE)) { line_begin("nsm"); kv_str("error", "dma_not_ram"); kv_flag("ok=0"); line_end(); return 1; }
    struct virtio_dev *d = virtio_find(f, DEVICE_ID_NSM);
    if (!d) { line_begin("nsm"); kv_str("error", "no_nsm"); kv_flag("ok=0"); line_end(); return 1; }
    const char *err = vq_open(&nsmq, d, 0, NSM_DMA_BASE);
    if (err) { line_begin("nsm"); kv_str("error", err); kv_flag("ok=0"); line_end(); return 1; }

    struct cw w; struct cr r; const u8 *p; u32 pn; long n;
    error_len = 0;
    int ok = 1;
    /* 1. "DescribeNSM" (a unit request is a bare text string) */
    w = (struct cw){ req_buf(), 0, NSM_REQUEST_MAX_SIZE, 0 };
    cw_text(&w, "DescribeNSM");
    u32 modn = 0; u64 max_pcrs = 0, locked = 0;
    n = nsm_call(w.n);
    if (n >= 0 && nsm_root(&r, (u32)n, "DescribeNSM")) {
        struct cr r2 = r, r3 = r, r4 = r; u32 m;
        if (cr_find(&r2, "module_id") && cr_str(&r2, 3, &p, &pn)) modn = keep(module_id, p, pn);
        if (cr_find(&r3, "max_pcrs")) cr_head(&r3, &m, &max_pcrs);
        if (cr_find(&r4, "locked_pcrs") && cr_head(&r4, &m, &locked) && m != 4) locked = 0;
    } else ok = 0;
    /* 2. {"ExtendPCR": {"index": 16, "data": h'probe-nsm'}} */
    w = (struct cw){ req_buf(), 0, NSM_REQUEST_MAX_SIZE, 0 };
    cw_head(&w, 5, 1); cw_text(&w, "ExtendPCR");
    cw_head(&w, 5, 2); cw_text(&w, "index"); cw_head(&w, 0, NSM_EXTEND_PCR); cw_text(&w, "data"); cw_bytes(&w, EXTEND_DATA, sizeof(EXTEND_DATA) - 1);
    u8 ext[48]; u32 extn = 0;
    n = nsm_call(w.n);
    if (n >= 0 && nsm_root(&r, (u32)n, "ExtendPCR") && cr_find(&r, "data") && cr_str(&r, 2, &p, &pn) && pn == 48) { memcpy(ext, p, 48); extn = 48; }
    else ok = 0;
    /* 3. {"DescribePCR": {"index": 16}} */
    w = (struct cw){ req_buf(), 0, NSM_REQUEST_MAX_SIZE, 0 };
    cw_head(&w, 5, 1); cw_text(&w, "DescribePCR"); cw_head(&w, 5, 1); cw_text(&w, "index"); cw_head(&w, 0, NSM_EXTEND_PCR);
    int match = 0; u64 lock = 2;
    n = nsm_call(w.n);
    if (n >= 0 && nsm_root(&r, (u32)n, "DescribePCR")) {
        struct cr r2 = r; u32 m;
        if (cr_find(&r2, "data") && cr_str(&r2, 2, &p, &pn) && pn == 48 && extn == 48) match = memcmp(p, ext, 48) == 0;
        r2 = r;
        if (cr_find(&r2, "lock") && cr_head(&r2, &m, &lock) && m == 7) lock = lock == 21; /* simple 21 = true */
    }
    if (!match) ok = 0;
    /* 4. {"Attestation": {"user_data": h'..', "nonce": h'..', "public_key": null}}, absent fields omitted */
    w = (struct cw){ req_buf(), 0, NSM_REQUEST_MAX_SIZE, 0 };
    cw_head(&w, 5, 1); cw_text(&w, "Attestation");
    cw_head(&w, 5, (ud_n ? 1 : 0) + (nonce_n ? 1 : 0) + 1);
    if (ud_n) { cw_text(&w, "user_data"); cw_bytes(&w, user_data, ud_n); }
    if (nonce_n) { cw_text(&w, "nonce"); cw_bytes(&w, nonce, nonce_n); }
    cw_text(&w, "public_key"); cw_head(&w, 7, 22);   /* null */
    const u8 *doc = 0; u32 docn = 0;
    n = w.err ? -1 : nsm_call(w.n);
    if (n >= 0 && nsm_root(&r, (u32)n, "Attestation") && cr_find(&r, "document") && cr_str(&r, 2, &doc, &docn)) {}
    else ok = 0;
    vq_close(&nsmq);

    line_begin("nsm");
    kv_hex("dev", d->base);
    kv_hexbytes("module_id_hex", module_id, modn);
    kv_dec("max_pcrs", max_pcrs);
    kv_dec("locked_pcrs", locked);
    kv_dec("pcr", NSM_EXTEND_PCR);
    kv_hexbytes("pcr_hex", ext, extn);
    kv_dec("pcr_lock", lock);
    kv_dec("pcr_match", (u64)match);
    if (error_len) kv_strn("error_code", (const char *)error_code, error_len);
    kv_dec("attestation_len", docn);
    kv_hexbytes("attestation_hex", doc, docn);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}
