/*
 * Host unit test of alanet_wire.c. Encodes the golden vectors (same inputs as
 * ../golden/vectors.json) and prints "name hex" lines; the Python test compares
 * them with the JSON byte for byte. Exits non-zero if a self-check fails.
 *
 *   gcc -std=c99 -Wall -Wextra -Werror -I. alanet_wire.c test_alanet_wire.c -o t && ./t
 */
#include <stdio.h>
#include <string.h>

#include "alanet_wire.h"

static int failures = 0;

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                  \
        }                                                                \
    } while (0)

static void print_hex(const char *name, const uint8_t *buf, size_t n)
{
    size_t i;
    printf("%s ", name);
    for (i = 0; i < n; i++) {
        printf("%02x", buf[i]);
    }
    printf("\n");
}

static void check_no_zero_but_last(const uint8_t *buf, size_t n)
{
    size_t i;
    CHECK(n > 0 && buf[n - 1] == 0u);
    for (i = 0; i + 1 < n; i++) {
        CHECK(buf[i] != 0u);
    }
}

static const float A[13] = {0.0f, 0.5f, -0.5f, 1.25f, -1.25f, 0.125f, 3.0625f, -3.0625f,
                            0.1f, -0.1f, 1.1f, -2.7f, 1.5707963f};
static const float E[4] = {0.0f, 0.25f, 12.5f, 1000.0f};
static const float TABLE[4] = {1.1f, -2.2f, 3.3f, 0.7f};

static void data_case(const char *name, uint32_t seq, uint32_t t_ms, const float *a, const float *e)
{
    uint8_t buf[ALANET_DATA_WIRE_MAX(17)];
    size_t n = alanet_encode_data(buf, sizeof buf, seq, t_ms, a, 13, e, 4);
    CHECK(n > 0);
    check_no_zero_but_last(buf, n);
    print_hex(name, buf, n);
    /* One byte short of what it needs: refused. */
    CHECK(alanet_encode_data(buf, n - 1, seq, t_ms, a, 13, e, 4) == 0);
}

static void cobs_case(const char *name, const uint8_t *src, size_t len)
{
    uint8_t buf[700];
    size_t n = alanet_cobs_encode(src, len, buf, sizeof buf);
    CHECK(n > 0 && n <= len + len / 254 + 1);
    print_hex(name, buf, n);
    if (n > 0) {
        CHECK(alanet_cobs_encode(src, len, buf, n - 1) == 0);
    }
}

int main(void)
{
    uint8_t buf[ALANET_RAW_WIRE_MAX(4, 60)];
    uint8_t src[700];
    float a_rev[13], e_rev[4], a2[13], raw[60 * 4];
    size_t i, n;

    CHECK(alanet_crc16((const uint8_t *)"123456789", 9) == 0x29B1u);

    data_case("data_basic", 0u, 0u, A, E);
    for (i = 0; i < 13; i++) {
        a2[i] = -0.75f;
        a_rev[i] = A[12 - i];
    }
    for (i = 0; i < 4; i++) {
        e_rev[i] = E[3 - i];
    }
    {
        const float zeros[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        data_case("data_wrap", 4294967295u, 4294967294u, a2, zeros);
    }
    data_case("data_seq_1000", 1000u, 16667u, a_rev, e_rev);

    n = alanet_encode_hello(buf, sizeof buf, 0u, 0u, "wear-0001", "1.0.0", "emopain-13a4e", 13, 4, 60.0f, 0.0f);
    CHECK(n > 0 && n <= ALANET_HELLO_WIRE_MAX);
    check_no_zero_but_last(buf, n);
    print_hex("hello_default", buf, n);

    n = alanet_encode_hello(buf, sizeof buf, 7u, 5000u, "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD", "", "emopain-13a4e",
                            13, 4, 60.0f, 1000.0f);
    CHECK(n > 0 && n <= ALANET_HELLO_WIRE_MAX);
    print_hex("hello_raw_maxid", buf, n);
    /* 33-byte device id: refused. */
    CHECK(alanet_encode_hello(buf, sizeof buf, 0u, 0u, "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD", "", "x", 13, 4, 60.0f,
                              0.0f) == 0);

    for (i = 0; i < 60 * 4; i++) {
        raw[i] = TABLE[i % 4];
    }
    n = alanet_encode_raw_emg(buf, sizeof buf, 3u, 123456u, 1000.0f, raw, 4, 60);
    CHECK(n > 0 && n <= ALANET_RAW_WIRE_MAX(4, 60));
    check_no_zero_but_last(buf, n);
    print_hex("raw_emg_60x4", buf, n);
    CHECK(alanet_encode_raw_emg(buf, sizeof buf, 3u, 0u, 1000.0f, raw, 4, 61) == 0);
    CHECK(alanet_encode_raw_emg(buf, sizeof buf, 3u, 0u, 1000.0f, raw, 4, 0) == 0);
    {
        const float one[4] = {0.0f, 1.0f, -1.0f, 0.5f};
        n = alanet_encode_raw_emg(buf, sizeof buf, 0u, 0u, 500.0f, one, 4, 1);
        CHECK(n > 0);
        print_hex("raw_emg_1x4", buf, n);
    }

    n = alanet_encode_exercise(buf, sizeof buf, 0u, 0u, ALANET_EXERCISE_BEND);
    CHECK(n > 0 && n <= ALANET_EXERCISE_WIRE_MAX);
    check_no_zero_but_last(buf, n);
    print_hex("exercise_bend", buf, n);
    n = alanet_encode_exercise(buf, sizeof buf, 5u, 300000u, ALANET_EXERCISE_NONE);
    CHECK(n > 0 && n <= ALANET_EXERCISE_WIRE_MAX);
    print_hex("exercise_none", buf, n);
    CHECK(alanet_encode_exercise(buf, sizeof buf, 0u, 0u, 9u) == 0); /* not an EmoPain code: refused */
    CHECK(alanet_encode_exercise(buf, n - 1, 5u, 300000u, ALANET_EXERCISE_NONE) == 0);

    for (i = 0; i < sizeof src; i++) {
        src[i] = (uint8_t)((i % 255u) + 1u);
    }
    cobs_case("cobs_empty", src, 0);
    {
        const uint8_t z[1] = {0};
        const uint8_t mixed[4] = {0x11, 0x22, 0x00, 0x33};
        const uint8_t ze[3] = {1, 0, 0};
        cobs_case("cobs_zero", z, 1);
        cobs_case("cobs_mixed", mixed, 4);
        cobs_case("cobs_zeros_end", ze, 3);
    }
    cobs_case("cobs_253", src, 253);
    cobs_case("cobs_254", src, 254);
    cobs_case("cobs_255", src, 255);
    {
        uint8_t t[255];
        memcpy(t, src, 254);
        t[254] = 0;
        cobs_case("cobs_254_zero", t, 255);
    }
    cobs_case("cobs_508", src, 508);
    {
        uint8_t t[600];
        memcpy(t, src, 300);
        t[300] = 0;
        memcpy(t + 301, src, 299);
        cobs_case("cobs_600_zero_mid", t, 600);
    }

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    return 0;
}
