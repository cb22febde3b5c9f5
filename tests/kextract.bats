#!/usr/bin/env bats
# kextract: Debian's real amd64 and arm64 cloud kernels (their .debs,
# unpacked with dpkg -x), and the forms other distributions ship made from
# them: gzip'd and EFI zboot arm64 Images, bzImages whose vmlinux is
# compressed every way the kernel can.

load helpers

setup_file() {
	local k=$BATS_FILE_TMPDIR/k
	# the real kernels: downloaded once (scripts/getkernel keeps the .debs)
	export KV_AMD64 KV_ARM64
	KV_AMD64=$("$VS_TOP/scripts/getkernel" amd64 "$k/amd64") || return 1
	KV_ARM64=$("$VS_TOP/scripts/getkernel" arm64 "$k/arm64") || return 1
	export BZ=$k/amd64/boot/vmlinuz-$KV_AMD64 ARM=$k/arm64/boot/vmlinuz-$KV_ARM64
	# the vmlinux inside the bzImage, decompressed by lz4 itself
	"$VS_TOP/tests/mkkernel" payload "$BZ" "$k/payload"
	lz4 -dc "$k/payload" > "$k/vmlinux"
	export VMLINUX=$k/vmlinux
}

setup() {
	cd "$T"
}

# tree DIR KERNEL NAME: a root filesystem tree DIR with KERNEL at NAME.
tree() {
	mkdir -p "$1/$(dirname "$3")"
	cp "$2" "$1/$3"
}

@test "-h, -V, bad options and operands" {
	run_split kextract -h
	assert_success
	[[ $output == usage:* ]]
	run_split kextract -V
	assert_success
	run_split kextract -x
	assert_refused 64 "unknown option"
	run_split kextract -F elf t
	assert_refused 64 "unknown format 'elf': use -F image or -F vmlinux"
	run_split kextract -g ../x t
	assert_refused 64 "invalid group name"
	run_split kextract -i k t
	assert_refused 64 "give ROOTFS or -i REF, not both"
	run_split kextract a b
	assert_refused 64 "too many operands"
	run_split kextract -k ../6.1 t
	assert_refused 64 "invalid kernel version '../6.1'"
	run_split kextract -i ""
	assert_refused 64 "-i needs an image reference"
	run_split kextract nosuchtree
	assert_refused 66 "nosuchtree"
	run_split kextract < /dev/null
	assert_refused 64 "no pipeline document"
	echo '{"rootfs":' > bad.json
	run_split kextract < bad.json
	assert_refused 65 "byte"
	[ ! -e kernel ] || [ -z "$(find kernel -type f ! -name .lock)" ]
}

@test "Debian's amd64 cloud kernel: the bzImage, its version from the bytes, the initrd beside it" {
	tree t "$BZ" "boot/vmlinuz-$KV_AMD64"
	cp "$(dirname "$BZ")/config-$KV_AMD64" t/boot/
	echo "an initrd" > "t/boot/initrd.img-$KV_AMD64"
	ln -s "boot/vmlinuz-$KV_AMD64" t/vmlinuz
	run_split kextract -g x86 t
	assert_success
	[ "$(jqo .kernel.path)" = "$T/kernel/x86/Image" ]
	[ "$(jqo .kernel.format)" = bzImage ] && [ "$(jqo .kernel.arch)" = amd64 ]
	[ "$(jqo .kernel.version)" = "$KV_AMD64" ]
	[ "$(jqo .kernel.initrd)" = "$T/kernel/x86/initrd" ]
	[ "$(jqo .kernel.from)" = "/boot/vmlinuz-$KV_AMD64" ]
	[ "$(jqo .kernel.reused)" = false ]
	cmp kernel/x86/Image "$BZ"
	[ "$(cat kernel/x86/initrd)" = "an initrd" ]
	# the version is the bytes', not the name's
	mv "t/boot/vmlinuz-$KV_AMD64" t/boot/vmlinuz-9.9.9
	mv "t/boot/initrd.img-$KV_AMD64" t/boot/initrd.img-9.9.9
	run_split kextract -g x86 t
	assert_success
	[ "$(jqo .kernel.version)" = "$KV_AMD64" ] && [ "$(jqo .kernel.from)" = /boot/vmlinuz-9.9.9 ]
	# unchanged: not rewritten
	local ino
	ino=$(stat -c %i.%Y kernel/x86/Image)
	run_split kextract -g x86 t
	assert_success
	[ "$(jqo .kernel.reused)" = true ]
	[ "$(stat -c %i.%Y kernel/x86/Image)" = "$ino" ]
	[ -z "$(find kernel -name '.*tmp*')" ]
}

@test "Debian's arm64 cloud kernel: a raw Image; gzip'd (Ubuntu) and EFI zboot ones become the same raw Image" {
	tree t "$ARM" "boot/vmlinuz-$KV_ARM64"
	run_split kextract -g arm t
	assert_success
	[ "$(jqo .kernel.arch)" = arm64 ] && [ "$(jqo .kernel.format)" = Image ]
	[ "$(jqo .kernel.version)" = "$KV_ARM64" ] && [ "$(jqo .kernel.initrd)" = null ]
	cmp kernel/arm/Image "$ARM"
	[ "$(od -An -tx1 -j56 -N4 kernel/arm/Image | tr -d ' ')" = 41524d64 ]
	# Ubuntu's form: the Image, gzip'd
	rm -rf kernel
	gzip -1 -n -c "$ARM" > "t/boot/vmlinuz-$KV_ARM64"
	run_split kextract -g arm t
	assert_success
	[ "$(jqo .kernel.arch)" = arm64 ] && [ "$(jqo .kernel.format)" = Image ]
	[ "$(jqo .kernel.version)" = "$KV_ARM64" ]
	cmp kernel/arm/Image "$ARM"
	# an EFI zboot image, gzip and zstd
	for c in gzip zstd; do
		rm -rf kernel
		"$VS_TOP/tests/mkkernel" zboot "$ARM" "$c" "t/boot/vmlinuz-$KV_ARM64"
		run_split kextract -g arm t
		assert_success
		cmp kernel/arm/Image "$ARM" || fail "zboot $c"
	done
	# an arm64 Image holds no vmlinux
	run_split kextract -g arm -F vmlinux t
	assert_refused 65 "an arm64 Image holds no ELF vmlinux"
}

@test "-F vmlinux: the ELF out of the bzImage, whatever the compression" {
	tree t "$BZ" "boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x86 -F vmlinux t
	assert_success
	[ "$(jqo .kernel.path)" = "$T/kernel/x86/vmlinux" ] && [ "$(jqo .kernel.format)" = vmlinux ]
	[ "$(jqo .kernel.arch)" = amd64 ]
	readelf -h kernel/x86/vmlinux | grep -q 'Machine: *Advanced Micro Devices X86-64' ||
		fail "not an x86-64 ELF: $(readelf -h kernel/x86/vmlinux 2>&1 | head -3)"
	readelf -lW kernel/x86/vmlinux | grep -q LOAD
	cmp kernel/x86/vmlinux "$VMLINUX"
	# Debian's is lz4; the kernel can also use these
	for c in "gzip -1 -n" "xz -0 --check=crc32" "zstd -1 -q" "bzip2 -1" "lzma -0" "lz4 -l -1"; do	# (fast levels: the format is what counts)
		$c -c "$VMLINUX" > payload
		"$VS_TOP/tests/mkkernel" rebz "$BZ" payload "t/boot/vmlinuz-$KV_AMD64"
		run_split kextract -q -g x86 -F vmlinux t
		assert_success
		cmp kernel/x86/vmlinux "$VMLINUX" || fail "vmlinux from a ${c%% *} payload differs"
	done
}

@test "several versions: the newest in version order, or -k" {
	for v in 5.10.0-30-cloud-amd64 6.1.0-9-cloud-amd64 6.1.0-10-cloud-amd64; do
		tree t "$BZ" "boot/vmlinuz-$v"
		echo "initrd $v" > "t/boot/initrd.img-$v"
	done
	tree t "$BZ" boot/vmlinuz-6.1.0-11-cloud-amd64.old
	run_split kextract -g x86 t
	assert_success
	[ "$(jqo .kernel.from)" = /boot/vmlinuz-6.1.0-10-cloud-amd64 ] || fail "chose $(jqo .kernel.from)"
	[ "$(cat kernel/x86/initrd)" = "initrd 6.1.0-10-cloud-amd64" ]
	run_split kextract -g x86 -k 6.1.0-9-cloud-amd64 t
	assert_success
	[ "$(jqo .kernel.from)" = /boot/vmlinuz-6.1.0-9-cloud-amd64 ]
	[ "$(cat kernel/x86/initrd)" = "initrd 6.1.0-9-cloud-amd64" ]
	run_split kextract -g x86 -k 7.0 t
	assert_refused 65 "no kernel version 7.0 in the tree \(it has: .*6.1.0-10-cloud-amd64"
	# Fedora and Arch keep it with the modules
	tree f "$BZ" "usr/lib/modules/$KV_AMD64/vmlinuz"
	ln -s usr/lib f/lib
	run_split kextract -g f f
	assert_success
	[ "$(jqo .kernel.from)" = "/usr/lib/modules/$KV_AMD64/vmlinuz" ]
}

@test "symlinks are resolved inside the tree, never on the host" {
	# /vmlinuz -> /opt/k/current (absolute: the tree's /) -> ../k/bz
	tree t "$BZ" opt/k/bz
	ln -s /opt/k/current t/vmlinuz
	ln -s ../k/bz t/opt/k/current
	run_split kextract -g s t
	assert_success
	[ "$(jqo .kernel.from)" = /opt/k/bz ]
	cmp kernel/s/Image "$BZ"
	# links that leave the tree find nothing (a kernel is there on the host)
	mkdir o && cp "$BZ" "$T/outside-kernel"
	ln -s "$T/outside-kernel" o/vmlinuz
	mkdir o/boot && ln -s ../../../../../../../../../../"$T/outside-kernel" o/boot/vmlinuz
	ln -s /../../../../"$T/outside-kernel" o/vmlinux
	run_split kextract -g o o
	assert_refused 65 "no kernel in the tree: looked for /boot/vmlinuz-\*, .*/vmlinuz"
	assert_one_line
	# a loop is no kernel either
	mkdir l && ln -s vmlinuz l/vmlinuz
	run_split kextract -g l l
	assert_refused 65 "no kernel in the tree"
	[ ! -e kernel/o/Image ] && [ ! -e kernel/l/Image ]
}

@test "from the base image, no tree: the kernel the VMs boot, symlinks resolved inside the image" {
	tree t "$BZ" opt/k/bz
	ln -s /opt/k/current t/vmlinuz
	ln -s ../k/bz t/opt/k/current
	mkdir -p t/boot && echo "an initrd" > t/boot/initrd.img
	# a kernel on the host, where the image's absolute links would lead
	mkdir -p o && cp "$BZ" "$T/outside-kernel"
	ln -s "$T/outside-kernel" o/vmlinuz
	kextract -q -g tree t > tree.json
	mkbase -q -s 5G -o "$T/b.img" t > base.json
	mkbase -q -s 5G -o "$T/o.img" o > /dev/null
	# from the pipeline document's base section (no rootfs)
	jq -c 'del(.rootfs)' base.json > doc
	run_split kextract -g img < doc
	assert_success
	[ "$(jqo .kernel.from)" = /opt/k/bz ]
	[ "$(jqo .kernel.version)" = "$(jq -r .kernel.version tree.json)" ]
	[ "$(jqo .kernel.source)" = "$(jq -r .base.source base.json)" ]
	[ "$(jqo .base.path)" = "$T/b.img" ]
	cmp kernel/img/Image kernel/tree/Image
	cmp kernel/img/initrd kernel/tree/initrd
	# or the image named as the operand
	run_split kextract -g op b.img
	assert_success
	cmp kernel/op/Image "$BZ"
	[ -z "$(find kernel -name '.*tmp*')" ]
	# a link out of the image finds nothing on the host
	run_split kextract -g o o.img
	assert_refused 65 "no kernel in the image: looked for"
	# a file that is no image
	echo junk > junk.img
	run_split kextract -g j junk.img
	assert_refused 65 "junk.img: not an ext4 image"
	[ ! -e kernel/o/Image ] && [ ! -e kernel/j/Image ]
}

@test "no kernel, a truncated kernel, something else: refused, and a kernel already there is kept" {
	mkdir empty
	run_split kextract -g x empty
	assert_refused 65 "no kernel in the tree: looked for"
	[ -z "$(find kernel -type f ! -name .lock)" ]
	tree t "$BZ" "boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x t
	assert_success
	head -c 5000000 "$BZ" > "t/boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x t
	assert_refused 65 "vmlinuz-$KV_AMD64: a truncated bzImage: its header says [0-9]+ bytes, the file has 5000000"
	cmp kernel/x/Image "$BZ"
	head -c 3000000 "$ARM" > "t/boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x t
	assert_refused 65 "a truncated arm64 Image"
	gzip -c "$ARM" | head -c 3000000 > "t/boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x t
	assert_refused 65 "cannot decompress it"
	echo "#!/bin/sh" > "t/boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x t
	assert_refused 65 "not a kernel vmstrap knows"
	gzip -c /etc/passwd > "t/boot/vmlinuz-$KV_AMD64"
	run_split kextract -g x t
	assert_refused 65 "decompresses to something that is not an arm64 Image"
	cmp kernel/x/Image "$BZ"
	[ -z "$(find kernel -name '.*tmp*')" ]
}

@test "pipeline: the rootfs section in, the kernel section out; the same source is reused without reading it" {
	tree t "$BZ" "boot/vmlinuz-$KV_AMD64"
	local d=sha256:1111111111111111111111111111111111111111111111111111111111111111
	jq -cn --arg p "$T/t" --arg d "$d" '{image:{ref:"x"},rootfs:{path:$p,digest:$d}}' > doc
	run_split kextract -g p < doc
	assert_success
	[ "$(jqo .image.ref)" = x ] && [ "$(jqo .kernel.source)" = "$d" ]
	# the keys vmstrap(7) documents, no more, no less
	[ "$(jqo '.kernel | keys | join(",")')" = "$(awk '/^\.Ss kernel$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7" | sort | paste -sd,)" ]
	# the same source: reused from the record, without reading the tree
	mv "t/boot/vmlinuz-$KV_AMD64" away
	run_split kextract -g p < doc
	assert_success
	[ "$(jqo .kernel.reused)" = true ] && [ "$(jqo .kernel.version)" = "$KV_AMD64" ]
	mv away "t/boot/vmlinuz-$KV_AMD64"
	# the kernel file replaced by something else is not taken for it
	echo other > kernel/p/Image
	run_split kextract -g p < doc
	assert_success
	[ "$(jqo .kernel.reused)" = false ]
	cmp kernel/p/Image "$BZ"
}

@test "-i REF: the kernel of a separate kernel image in the cache" {
	tree kt "$BZ" boot/vmlinux-ignored
	rm -rf kt && tree kt "$BZ" "boot/vmlinuz-$KV_AMD64"
	tar -C kt -cf k.tar boot
	umoci init --layout oci-cache
	umoci new --image oci-cache:kernel
	umoci raw add-layer --image oci-cache:kernel k.tar
	# fetched, not unpacked: kextract has oci-unpack unpack it
	run_split kextract -i kernel
	assert_success
	[ "$(jqo .kernel.path)" = "$T/kernel/slicer/Image" ]
	local hex
	hex=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "kernel") | .digest' oci-cache/index.json)
	[ "$(jqo .kernel.source)" = "$hex" ]
	[ -d "oci-cache/rootfs/${hex#sha256:}/boot" ]
	cmp kernel/slicer/Image "$BZ"
	run_split kextract -i kernel
	assert_success
	[ "$(jqo .kernel.reused)" = true ]
	run_split kextract -i nosuch
	assert_refused 66 "nosuch"
	# an unpack that fails says why
	umoci new --image oci-cache:broken
	printf 'f|../evil|x\n' | "$VS_TOP/tests/mktar" evil.tar
	umoci raw add-layer --image oci-cache:broken evil.tar
	run_split kextract -i broken
	assert_refused 65 "unpacking broken: layer 1: entry '../evil'"
	assert_one_line
}
