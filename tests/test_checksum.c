/* SPDX-License-Identifier: MIT */
/* engine/checksum.c: crc32c through ISA-L. */
#include "fixtures.h"
#include "engine/engine.h"

#include <string.h>

static void test_known_values(void **state)
{
	/* The standard crc32c check value. */
	assert_int_equal(kvr_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(kvr_crc32c(0, "", 0), 0);
	uint8_t zeros[32] = {0};

	/* RFC 3720 B.4: 32 bytes of zeros */
	assert_int_equal(kvr_crc32c(0, zeros, 32), 0x8a9136aau);
}

static void test_chaining_and_sgl(void **state)
{
	uint8_t buf[10000];
	struct kvr_sgx sgx[3] = {
	    {buf, 1, NULL}, {buf + 1, 4095, NULL}, {buf + 4096, 10000 - 4096, NULL}};

	kvt_fill(buf, sizeof(buf), 3);
	uint32_t whole = kvr_crc32c(0, buf, sizeof(buf));
	uint32_t part = kvr_crc32c(kvr_crc32c(0, buf, 777), buf + 777, sizeof(buf) - 777);

	assert_int_equal(whole, part);
	assert_int_equal(kvr_crc32c_sgl(sgx, 3, sizeof(buf)), whole);
	/* only the first len bytes count */
	assert_int_equal(kvr_crc32c_sgl(sgx, 3, 5000), kvr_crc32c(0, buf, 5000));
	buf[9999] ^= 1;
	assert_int_not_equal(kvr_crc32c_sgl(sgx, 3, sizeof(buf)), whole);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_values),
	    cmocka_unit_test(test_chaining_and_sgl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
