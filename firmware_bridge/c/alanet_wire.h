/*
 * alanet_wire.h - ALANet wearable wire protocol v1, packet encoder for firmware.
 *
 * C99, no heap, no dependency beyond <stddef.h>/<stdint.h>/<string.h>. Each call
 * writes one complete packet, already COBS-framed and terminated by 0x00, into a
 * caller-supplied buffer, computing the COBS stuffing and the CRC on the fly (no
 * scratch buffer). Send the returned number of bytes as is over UART / USB-CDC.
 *
 * Packet before framing (all little-endian, floats IEEE-754 binary32):
 *   off 0  u8   version (1)        off 1  u8  type (1 HELLO, 2 DATA, 3 RAW_EMG, 4 EXERCISE)
 *   off 2  u32  seq (per type)     off 6  u32 t_ms (device ms since boot)
 *   off 10 ...  payload            last 2 u16 CRC-16/CCITT-FALSE of bytes [0, 10+n)
 * See firmware_bridge/PROTOCOL.md for the payloads.
 *
 * Every encoder returns the number of bytes written, or 0 when `cap` is too small
 * or an argument is out of range (nothing usable is written then).
 */
#ifndef ALANET_WIRE_H
#define ALANET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ALANET_PROTOCOL_VERSION 1u
#define ALANET_TYPE_HELLO 0x01u
#define ALANET_TYPE_DATA 0x02u
#define ALANET_TYPE_RAW_EMG 0x03u
#define ALANET_TYPE_EXERCISE 0x04u

/* EmoPain exercise codes for EXERCISE packets (optional: send when the exercise changes). */
#define ALANET_EXERCISE_OTHER 0u
#define ALANET_EXERCISE_ONE_LEG_STAND 1u
#define ALANET_EXERCISE_REACH_FORWARD 2u
#define ALANET_EXERCISE_BEND 3u
#define ALANET_EXERCISE_SIT_TO_STAND 4u
#define ALANET_EXERCISE_STAND_TO_SIT 5u
#define ALANET_EXERCISE_SITTING_STILL 6u
#define ALANET_EXERCISE_STANDING_STILL 7u
#define ALANET_EXERCISE_WALKING 8u
#define ALANET_EXERCISE_NONE 0xFFu

#define ALANET_HEADER_SIZE 10u
#define ALANET_MAX_PACKET 1024u /* bytes before COBS, CRC included */
#define ALANET_HELLO_MAX_STR 32u
#define ALANET_MAX_RAW_SAMPLES 60u

/* Worst-case bytes on the wire for a packet of n bytes: COBS overhead + delimiter. */
#define ALANET_WIRE_SIZE(n) ((n) + (n) / 254u + 2u)
/* Buffer sizes that always suffice. */
#define ALANET_DATA_WIRE_MAX(n_channels) ALANET_WIRE_SIZE(ALANET_HEADER_SIZE + 2u + 4u * (n_channels) + 2u)
#define ALANET_HELLO_WIRE_MAX ALANET_WIRE_SIZE(ALANET_HEADER_SIZE + 12u + 3u * (1u + ALANET_HELLO_MAX_STR) + 2u)
#define ALANET_RAW_WIRE_MAX(n_ch, n_s) ALANET_WIRE_SIZE(ALANET_HEADER_SIZE + 6u + 4u * (n_ch) * (n_s) + 2u)
#define ALANET_EXERCISE_WIRE_MAX ALANET_WIRE_SIZE(ALANET_HEADER_SIZE + 1u + 2u)

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0 ("123456789" -> 0x29B1). */
uint16_t alanet_crc16(const uint8_t *data, size_t len);
uint16_t alanet_crc16_update(uint16_t crc, uint8_t byte);

/* Canonical COBS of `len` bytes into `dst` (no delimiter). Returns bytes written, 0 if cap too small. */
size_t alanet_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap);

/* DATA: one frame of n_angles angles (rad) + n_emg sEMG envelopes (a.u.). */
size_t alanet_encode_data(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms,
                          const float *angles, uint8_t n_angles, const float *emg, uint8_t n_emg);

/* HELLO: strings are NUL-terminated UTF-8, at most ALANET_HELLO_MAX_STR bytes each. */
size_t alanet_encode_hello(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms,
                           const char *device_id, const char *firmware, const char *layout,
                           uint8_t n_angles, uint8_t n_emg, float sample_rate_hz, float raw_emg_rate_hz);

/* RAW_EMG: samples[n_samples][n_channels] row-major (sample-major), 1 <= n_samples <= 60. */
size_t alanet_encode_raw_emg(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms, float rate_hz,
                             const float *samples, uint8_t n_channels, uint8_t n_samples);

/* EXERCISE: the exercise the wearer is doing, code 0..8 (ALANET_EXERCISE_*) or ALANET_EXERCISE_NONE. */
size_t alanet_encode_exercise(uint8_t *out, size_t cap, uint32_t seq, uint32_t t_ms, uint8_t code);

#ifdef __cplusplus
}
#endif
#endif /* ALANET_WIRE_H */
