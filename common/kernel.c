/* kernel.c: what a kernel file is, from its bytes (kernel.h).  The layouts
 * are the Linux boot protocols: Documentation/arch/x86/boot.rst,
 * Documentation/arch/arm64/booting.rst, and the EFI zboot header
 * (drivers/firmware/efi/libstub/zboot-header.S). */
#include <ctype.h>
#include <string.h>

#include "kernel.h"

static uint16_t le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

const char *kernel_form_name(enum kernel_form f)
{
	switch (f) {
	case KERNEL_BZIMAGE: return "bzImage";
	case KERNEL_IMAGE: return "Image";
	case KERNEL_GZIP_IMAGE: return "gzip Image";
	case KERNEL_ZBOOT: return "zboot Image";
	case KERNEL_ELF: return "vmlinux";
	}
	return "?";
}

const char *kernel_elf_arch(const unsigned char *h, size_t n)
{
	if (n < 20 || memcmp(h, "\x7f" "ELF", 4) != 0 || h[5] != 1)
		return NULL;	/* little-endian only: x86 and arm64 are */
	switch (le16(h + 18)) {
	case 62: return "amd64";	/* EM_X86_64 */
	case 3: return "386";		/* EM_386 */
	case 183: return "arm64";	/* EM_AARCH64 */
	}
	return NULL;
}

/* The first word of the bzImage's version string ("6.1.0-56-cloud-amd64
 * (debian-kernel@...) #1 SMP ..."), which is what uname -r says. */
static void bz_version(const unsigned char *h, size_t n, struct kernel_info *ki)
{
	size_t at, i = 0;

	if (le16(h + 0x206) < 0x200 || le16(h + 0x20e) == 0)
		return;
	at = 0x200 + (size_t)le16(h + 0x20e);
	while (at + i < n && i + 1 < sizeof ki->version &&
	    isgraph(h[at + i])) {
		ki->version[i] = (char)h[at + i];
		i++;
	}
	ki->version[i] = '\0';
}

/* The end of an arm64 Image's PE sections (with the EFI stub, the
 * Image is a PE file), or 0 when it has no PE header to tell. */
static uint64_t pe_end(const unsigned char *h, size_t n)
{
	uint32_t pe, nsec, opt, sec;
	uint64_t end = 0;

	if (n < 0x40 || h[0] != 'M' || h[1] != 'Z')
		return 0;
	pe = le32(h + 0x3c);
	if (pe > n - 24 || memcmp(h + pe, "PE\0\0", 4) != 0)
		return 0;
	nsec = le16(h + pe + 6);
	opt = le16(h + pe + 20);
	sec = pe + 24 + opt;
	for (uint32_t i = 0; i < nsec && sec + 40 * (i + 1) <= n; i++) {
		const unsigned char *s = h + sec + 40 * i;
		uint64_t e = (uint64_t)le32(s + 20) + le32(s + 16);
		if (le32(s + 16) && e > end)	/* raw data: offset + size */
			end = e;
	}
	return end;
}

static int truncated(struct vs_err *e, const char *what, uint64_t want,
    uint64_t have)
{
	return vs_error(e, EX_DATAERR, 0,
	    "a truncated %s: its header says %llu bytes, the file has %llu",
	    what, (unsigned long long)want, (unsigned long long)have);
}

int kernel_identify(const unsigned char *h, size_t n, uint64_t size,
    struct kernel_info *ki, struct vs_err *e)
{
	memset(ki, 0, sizeof *ki);
	if (n >= 4 && memcmp(h, "\x7f" "ELF", 4) == 0) {
		ki->form = KERNEL_ELF;
		ki->arch = kernel_elf_arch(h, n);
		if (ki->arch == NULL)
			return vs_error(e, EX_DATAERR, 0,
			    "an ELF file for an architecture vmstrap does not run (machine %u)",
			    n >= 20 ? le16(h + 18) : 0);
		return 0;
	}
	if (n >= 0x250 && memcmp(h + 0x202, "HdrS", 4) == 0) {
		unsigned setup = h[0x1f1] ? h[0x1f1] : 4;
		uint64_t pm = (uint64_t)(setup + 1) * 512;
		uint64_t sys = (uint64_t)le32(h + 0x1f4) * 16;
		uint16_t proto = le16(h + 0x206);

		ki->form = KERNEL_BZIMAGE;
		/* XLF_KERNEL_64 (protocol 2.12+): a 64-bit kernel */
		ki->arch = proto >= 0x20c && (le16(h + 0x236) & 1) ? "amd64" : "386";
		bz_version(h, n, ki);
		/* syssize is rounded up to 16 bytes; the file need not be */
		if (pm + sys > size + 15)
			return truncated(e, "bzImage", pm + sys, size);
		if (proto >= 0x208) {
			ki->payload_off = pm + le32(h + 0x248);
			ki->payload_len = le32(h + 0x24c);
			if (ki->payload_off + ki->payload_len > size)
				return truncated(e, "bzImage",
				    ki->payload_off + ki->payload_len, size);
			if (ki->payload_len < 4)
				return vs_error(e, EX_DATAERR, 0,
				    "a bzImage without a payload");
			/* the last 4 bytes: the size decompressed (read
			 * by the caller, who has the file) */
			ki->payload_len -= 4;
		}
		return 0;
	}
	if (n >= 0x40 && memcmp(h + 0x38, "ARM\x64", 4) == 0) {
		uint64_t end = pe_end(h, n);
		ki->form = KERNEL_IMAGE;
		ki->arch = "arm64";
		if (end > size)
			return truncated(e, "arm64 Image", end, size);
		if (size < 64)
			return truncated(e, "arm64 Image", 64, size);
		return 0;
	}
	if (n >= 0x40 && h[0] == 'M' && h[1] == 'Z' &&
	    memcmp(h + 4, "zimg", 4) == 0) {
		size_t i;
		ki->form = KERNEL_ZBOOT;
		ki->payload_off = le32(h + 8);
		ki->payload_len = le32(h + 12);
		for (i = 0; i + 1 < sizeof ki->compression && 24 + i < 0x38 &&
		    isalnum(h[24 + i]); i++)
			ki->compression[i] = (char)h[24 + i];
		ki->compression[i] = '\0';
		if (ki->payload_off + ki->payload_len > size)
			return truncated(e, "EFI zboot image",
			    ki->payload_off + ki->payload_len, size);
		return 0;
	}
	if (n >= 3 && h[0] == 0x1f && h[1] == 0x8b && h[2] == 8) {
		ki->form = KERNEL_GZIP_IMAGE;
		return 0;
	}
	return vs_error(e, EX_DATAERR, 0,
	    "not a kernel vmstrap knows: neither an x86 bzImage, an arm64 Image (raw, gzip or EFI zboot) nor an ELF vmlinux");
}

int kernel_vercmp(const char *a, const char *b)
{
	while (*a || *b) {
		if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
			const char *ea, *eb;
			size_t la, lb;
			int c;
			while (*a == '0' && isdigit((unsigned char)a[1]))
				a++;
			while (*b == '0' && isdigit((unsigned char)b[1]))
				b++;
			for (ea = a; isdigit((unsigned char)*ea); ea++)
				;
			for (eb = b; isdigit((unsigned char)*eb); eb++)
				;
			la = (size_t)(ea - a);
			lb = (size_t)(eb - b);
			if (la != lb)
				return la < lb ? -1 : 1;
			c = memcmp(a, b, la);
			if (c)
				return c < 0 ? -1 : 1;
			a = ea;
			b = eb;
			continue;
		}
		if (*a != *b)
			return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
		a++;
		b++;
	}
	return 0;
}

#define BANNER "Linux version "

/* Look for the banner in p[0..n); true when the version after it is whole
 * (ends with a space before n). */
static bool banner_in(struct kernel_banner *b, const unsigned char *p, size_t n)
{
	const unsigned char *s = p;

	while ((s = memmem(s, n - (size_t)(s - p), BANNER,
	    sizeof BANNER - 1)) != NULL) {
		const unsigned char *v = s + sizeof BANNER - 1;
		size_t i = 0;
		while (v + i < p + n && i + 1 < sizeof b->version &&
		    isgraph(v[i]))
			i++;
		if (v + i < p + n && v[i] == ' ' && i > 0 &&
		    isdigit(v[0])) {
			memcpy(b->version, v, i);
			b->version[i] = '\0';
			b->found = true;
			return true;
		}
		s++;
	}
	return false;
}

void kernel_banner_feed(struct kernel_banner *b, const void *data, size_t n)
{
	const unsigned char *p = data;

	if (b->found || n == 0)
		return;
	/* across the boundary: the carry and the start of this piece */
	if (b->ncarry) {
		unsigned char joint[2 * sizeof b->carry];
		size_t m = n < sizeof b->carry ? n : sizeof b->carry;
		memcpy(joint, b->carry, b->ncarry);
		memcpy(joint + b->ncarry, p, m);
		if (banner_in(b, joint, b->ncarry + m))
			return;
	}
	if (banner_in(b, p, n))
		return;
	/* keep the last bytes of carry + piece for the next boundary */
	if (n >= sizeof b->carry) {
		memcpy(b->carry, p + n - sizeof b->carry, sizeof b->carry);
		b->ncarry = sizeof b->carry;
		return;
	}
	if (b->ncarry + n > sizeof b->carry) {
		size_t drop = b->ncarry + n - sizeof b->carry;
		memmove(b->carry, b->carry + drop, b->ncarry - drop);
		b->ncarry -= drop;
	}
	memcpy(b->carry + b->ncarry, p, n);
	b->ncarry += n;
}
