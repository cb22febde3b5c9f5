/* kernel.h: what a kernel file is, from its bytes.
 *
 * The forms images ship a Linux kernel in:
 *   - an x86 bzImage: a real-mode setup header ("HdrS" at 0x202) with the
 *     version string, then the protected-mode code, which holds the
 *     compressed vmlinux (the "payload") followed by its length, 4 bytes;
 *   - an arm64 Image: the raw kernel, "ARM\x64" at 0x38;
 *   - a gzip-compressed arm64 Image (Ubuntu's vmlinuz);
 *   - an EFI zboot image: a PE file, "zimg" at 4, holding a compressed
 *     Image (the compression named at 24);
 *   - an ELF vmlinux.
 * kernel_identify() reads only the head of the file (KERNEL_HEAD bytes or
 * the whole file if smaller). */
#ifndef VS_KERNEL_H
#define VS_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define KERNEL_HEAD 65536

enum kernel_form {
	KERNEL_BZIMAGE,
	KERNEL_IMAGE,		/* arm64, raw */
	KERNEL_GZIP_IMAGE,	/* gzip: an Image once decompressed (unchecked) */
	KERNEL_ZBOOT,		/* EFI zboot */
	KERNEL_ELF,
};

struct kernel_info {
	enum kernel_form form;
	const char *arch;	/* "amd64", "386", "arm64", or NULL (not known yet) */
	char version[128];	/* from the bytes, or "" */
	/* bzImage: the compressed vmlinux; zboot: the compressed Image */
	uint64_t payload_off, payload_len;
	uint32_t payload_size;	/* bzImage: its size once decompressed */
	char compression[16];	/* zboot: as the header names it */
};

/* Identify the kernel whose first n bytes are head (n = min(KERNEL_HEAD,
 * file size)) and whose file has size bytes.  EX_DATAERR, with a message
 * saying what is wrong, for something that is no kernel this knows or that
 * is cut short. */
int kernel_identify(const unsigned char *head, size_t n, uint64_t size,
    struct kernel_info *ki, struct vs_err *e);

/* The form's name: "bzImage", "Image", "gzip Image", "zboot Image",
 * "vmlinux". */
const char *kernel_form_name(enum kernel_form f);

/* The architecture of an ELF file's e_machine, or NULL. */
const char *kernel_elf_arch(const unsigned char *head, size_t n);

/* Compare two kernel versions in version order: runs of digits as numbers,
 * the rest byte by byte ("6.1.0-10" > "6.1.0-9" > "5.10.0-30"). */
int kernel_vercmp(const char *a, const char *b);

/* Find "Linux version X " in a stream given in pieces: feed every piece;
 * once found, version holds X. */
struct kernel_banner {
	char carry[160];
	size_t ncarry;
	bool found;
	char version[128];
};
void kernel_banner_feed(struct kernel_banner *b, const void *p, size_t n);

#endif
