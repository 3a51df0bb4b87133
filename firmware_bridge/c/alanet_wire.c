/* alanet_wire.c - see alanet_wire.h. C99, no heap, standard library only. */
#include "alanet_wire.h"

#include <string.h>

/* The wire format carries IEEE-754 binary32; refuse to build where float is not 32 bits. */
typedef char alanet_float_must_be_32_bits[(sizeof(float) == 4u) ? 1 : -1];

uint16_t alanet_crc16_update(uint16_t crc, uint8_t byte)
{
    unsigned i;
    crc ^= (uint16_t)((uint16_t)byte << 8);
    for (i = 0; i < 8u; i++) {
        crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint16_t alanet_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    for (i = 0; i < len; i++) {
        crc = alanet_crc16_update(crc, data[i]);
    }
    return crc;
}

/* Streaming COBS writer: stuffs bytes straight into the output buffer. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;      /* next free byte */
    size_t code_pos; /* where the open block's code byte goes */
    uint8_t code;    /* 1 + bytes in the open block; 0 = no open block */
    uint16_t crc;
    int ok;
} writer_t;

static void w_init(writer_t *w, uint8_t *out, size_t cap)
{
    w->out = out;
    w->cap = cap;
    w->pos = 0;
    w->code_pos = 0;
    w->code = 0;
    w->crc = 0xFFFFu;
    w->ok = (out != NULL);
}

static void w_open(writer_t *w)
{
    if (w->pos >= w->cap) {
        w->ok = 0;
        return;
    }
    w->code_pos = w->pos++;
    w->code = 1;
}

/* Append one packet byte (COBS only; the CRC is handled by w_put). */
static void w_stuff(writer_t *w, uint8_t b)
{
    if (!w->ok) {
        return;
    }
    if (w->code == 0) {
        w_open(w);
        if (!w->ok) {
            return;
        }
    }
    if (b == 0u) {
        w->out[w->code_pos] = w->code;
        w_open(w); /* a zero always starts a new block */
        return;
    }
    if (w->pos >= w->cap) {
        w->ok = 0;
        return;
    }
    w->out[w->pos++] = b;
    w->code++;
    if (w->code == 0xFFu) {
        w->out[w->code_pos] = w->code;
        w->code = 0; /* opened lazily: no empty block after a final full one */
    }
}

static void w_put(writer_t *w, uint8_t b)
{
    w->crc = alanet_crc16_update(w->crc, b);
    w_stuff(w, b);
}

static void w_u32(writer_t *w, uint32_t v)
{
    w_put(w, (uint8_t)(v & 0xFFu));
    w_put(w, (uint8_t)((v >> 8) & 0xFFu));
    w_put(w, (uint8_t)((v >> 16) & 0xFFu));
    w_put(w, (uint8_t)((v >> 24) & 0xFFu));
}

static void w_f32(writer_t *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, sizeof v); /* bit pattern; byte order fixed by w_u32 */
    w_u32(w, v);
}

static void w_header(writer_t *w, uint8_t type, uint32_t seq, uint32_t t_ms)
{
    w_put(w, (uint8_t)ALANET_PROTOCOL_VERSION);
    w_put(w, type);
    w_u32(w, seq);
    w_u32(w, t_ms);
}

/* Append the CRC (little-endian), close the last block, add the 0x00 delimiter. */
static size_t w_finish(writer_t *w)
{
    uint16_t crc = w->crc;
    w_stuff(w, (uint8_t)(crc & 0xFFu));
    w_stuff(w, (uint8_t)(crc >> 8));
    if (!w->ok) {
        return 0;
    }
    if (w->code != 0) {
        w->out[w->code_pos] = w->code;
    }
    if (w->pos >= w->cap) {
        return 0;
    }
    w->out[w->pos++] = 0u;
    return w->pos;
}

size_t alanet_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    writer_t w;
    size_t i;
    w_init(&w, dst, cap);
    if (src == NULL && len != 0u) {
        return 0;
    }
    w_open(&w);
    for (i = 0; i < len; i++) {
        w_stuff(&w, src[i]);
    }
    if (!w.ok) {
        return 0;
    }
    if (w.code != 0) {
        w.out[w.code_pos] = w.code;
    }
    return w.pos;
}

size_t alanet_encode_data(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms,
                          const float *angles, uint8_t n_angles, const float *emg, uint8_t n_emg)
{
    writer_t w;
    unsigned i;
    if ((n_angles && angles == NULL) || (n_emg && emg == NULL) ||
        ALANET_HEADER_SIZE + 2u + 4u * ((unsigned)n_angles + n_emg) + 2u > ALANET_MAX_PACKET) {
        return 0;
    }
    w_init(&w, out, cap);
    w_header(&w, ALANET_TYPE_DATA, seq, t_ms);
    w_put(&w, n_angles);
    w_put(&w, n_emg);
    for (i = 0; i < n_angles; i++) {
        w_f32(&w, angles[i]);
    }
    for (i = 0; i < n_emg; i++) {
        w_f32(&w, emg[i]);
    }
    return w_finish(&w);
}

static int w_str(writer_t *w, const char *s)
{
    size_t n, i;
    if (s == NULL) {
        s = "";
    }
    n = strlen(s);
    if (n > ALANET_HELLO_MAX_STR) {
        return 0;
    }
    w_put(w, (uint8_t)n);
    for (i = 0; i < n; i++) {
        w_put(w, (uint8_t)s[i]);
    }
    return 1;
}

size_t alanet_encode_hello(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms,
                           const char *device_id, const char *firmware, const char *layout,
                           uint8_t n_angles, uint8_t n_emg, float sample_rate_hz, float raw_emg_rate_hz)
{
    writer_t w;
    w_init(&w, out, cap);
    w_header(&w, ALANET_TYPE_HELLO, seq, t_ms);
    w_put(&w, n_angles);
    w_put(&w, n_emg);
    w_put(&w, 0u); /* flags, u16, reserved */
    w_put(&w, 0u);
    w_f32(&w, sample_rate_hz);
    w_f32(&w, raw_emg_rate_hz);
    if (!w_str(&w, device_id) || !w_str(&w, firmware) || !w_str(&w, layout)) {
        return 0;
    }
    return w_finish(&w);
}

size_t alanet_encode_raw_emg(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms, float rate_hz,
                             const float *samples, uint8_t n_channels, uint8_t n_samples)
{
    writer_t w;
    size_t i, n = (size_t)n_channels * n_samples;
    if (samples == NULL || n_channels == 0u || n_samples == 0u || n_samples > ALANET_MAX_RAW_SAMPLES ||
        ALANET_HEADER_SIZE + 6u + 4u * n + 2u > ALANET_MAX_PACKET) {
        return 0;
    }
    w_init(&w, out, cap);
    w_header(&w, ALANET_TYPE_RAW_EMG, seq, t_ms);
    w_f32(&w, rate_hz);
    w_put(&w, n_channels);
    w_put(&w, n_samples);
    for (i = 0; i < n; i++) {
        w_f32(&w, samples[i]);
    }
    return w_finish(&w);
}

size_t alanet_encode_exercise(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms, uint8_t code)
{
    writer_t w;
    if (code > ALANET_EXERCISE_WALKING && code != ALANET_EXERCISE_NONE) {
        return 0;
    }
    w_init(&w, out, cap);
    w_header(&w, ALANET_TYPE_EXERCISE, seq, t_ms);
    w_put(&w, code);
    return w_finish(&w);
}
