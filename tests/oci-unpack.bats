#!/usr/bin/env bats
# oci-unpack: real layers (umoci-built and crafted with python's tarfile),
# compared entry by entry with `umoci unpack`; malicious layers; broken
# images; rootless records; the warm path and interruptions.

load helpers

setup_file() {
	rich_fixture
}

setup() {
	cd "$T"
}

# refused_clean STATUS REGEX: refused, and nothing left: no tree, no
# temporary tree, nothing outside.
refused_clean() {
	assert_refused "$1" "$2"
	assert_one_line
	[ ! -e out/t ] || fail "a tree was left under the final name"
	[ -z "$(find out -name '.t.tmp-*')" ] || fail "a temporary tree was left"
}

manifest_of() {
	jq -r --arg r "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' "$1/index.json"
}

@test "-h, -V, bad options and operands" {
	run_split oci-unpack -h
	assert_success
	assert_output --partial "usage: oci-unpack"
	run_split oci-unpack -V
	assert_output --regexp '^oci-unpack \(vmstrap\) '
	run_split oci-unpack -x
	assert_refused 64 "unknown option"
	run_split oci-unpack -o
	assert_refused 64 "needs a value|requires an argument|-o"
	run_split oci-unpack L
	assert_refused 64 "LAYOUT and REF"
	run_split oci-unpack a b c
	assert_refused 64 "too many operands"
	run_split oci-unpack < /dev/null
	assert_refused 64 "no pipeline document"
}

@test "bad documents are refused with EX_DATAERR" {
	run_split oci-unpack <<< '{"image": '
	assert_refused 65 "byte"
	run_split oci-unpack <<< '{"disk": {}}'
	assert_refused 65 "image"
	assert_one_line
	run_split oci-unpack <<< '{"image": {"layout": "/nonexistent", "digest": "sha256:x"}}'
	assert_refused 65 "not a digest"
}

@test "the tree equals umoci's, entry by entry: whiteouts, opaque, links, devices, modes, xattrs, capability" {
	need_root "the fixture has devices and owners, and umoci unpack needs root"
	mkdir out
	run_split oci-unpack -o out/t "$RICH" rich
	assert_success
	umoci unpack --image "$RICH:rich" u > /dev/null
	"$VS_TOP/tests/treelist" -d out/t > ours
	"$VS_TOP/tests/treelist" -d u/rootfs > theirs
	diff -u theirs ours || fail "the trees differ (- umoci, + oci-unpack)"
	# and the fixture has what it says it has
	grep -q '^dev/null c .* dev 1,3 ' ours
	grep -q '^dev/sda b 0660 0 6 ' ours
	grep -q '^dev/initctl p ' ours
	grep -q '^bin/su - 4755 ' ours
	grep -q '^bin/sg - 2755 0 5 ' ours
	grep -q '^etc/readonly - 0444 .*user.note=' ours
	grep -q '^tmp d 1777 ' ours
	grep -q '^srv/sgid d 2775 0 50 ' ours
	grep -q '^etc/owned - 0644 1000 1001 .*user.comment=' ours
	grep -q '^etc/link l 0777 7 8 .* -> ../etc/owned ' ours
	grep -q '^abs l .* -> /etc/passwd ' ours
	grep -q '^bin/ping .*security.capability=' ours
	grep -q '^bin/su .*trusted.vmstrap=' ours
	grep -q '^usr/bin/c .* link-of usr/bin/a ' ours
	grep -q '^opq/new ' ours
	grep -q '^opq/more ' ours
	! grep -q '^opq/old' ours || false
	! grep -q '^gone' ours || false
	! grep -q '^wh/del' ours || false
	! grep -q '^etc/passwd' ours || false
	! grep -q 'wh\.' ours || false
	getcap out/t/bin/ping | grep -q cap_net_raw
}

@test "the rootfs section: keys as documented, counts true to the tree" {
	need_root "the fixture has devices and owners"
	mkdir out
	run_split oci-unpack -o out/t "$RICH" rich
	assert_success
	local keys doc7 man1
	keys=$(jqo '.rootfs | keys_unsorted | join(" ")')
	doc7=$(sed -n '/^\.Ss rootfs/,/^\.Ss /p' "$VS_TOP/man/vmstrap.7" |
		awk '/^\.It Li /{print $3}' | paste -sd' ')
	man1=$(awk '/^\.It Li /{print $3}' "$VS_TOP/man/oci-unpack.1" | paste -sd' ')
	[ "$keys" = "$doc7" ] || fail "section keys '$keys', vmstrap.7 says '$doc7'"
	[ "$keys" = "$man1" ] || fail "section keys '$keys', oci-unpack.1 says '$man1'"
	[ "$(jqo .rootfs.path)" = "$T/out/t" ]
	[ "$(jqo .rootfs.digest)" = "$(manifest_of "$RICH" rich)" ]
	[ "$(jqo .rootfs.entries)" -eq "$(find out/t -mindepth 1 | wc -l)" ]
	[ "$(jqo .rootfs.bytes)" -eq "$(find out/t -type f -printf '%i %s\n' | sort -u | awk '{s += $2} END {print s}')" ]
	[ "$(jqo .rootfs.rootless)" = false ]
	[ "$(jqo .rootfs.reused)" = false ]
}

@test "whiteouts apply to lower layers only, whatever the order in the layer" {
	tarball one <<-'EOF'
	d|a
	f|a/lower|1
	d|d
	f|d/lower|1
	d|o
	f|o/lower|1
	d|o/sub
	f|o/sub/lower|1
	f|x|lower
	EOF
	tarball two <<-'EOF'
	f|a/same|2
	f|a/.wh.same
	f|.wh.d
	f|d/new|2
	f|o/new|2
	f|o/.wh..wh..opq
	d|o/sub
	f|o/sub/new|2
	f|.wh.x
	f|x|upper
	f|a/.wh.missing
	f|nodir/.wh.y
	EOF
	layout w one.tar two.tar
	run_split oci-unpack -o "$T/t" L w
	assert_success
	[ "$(cd t && find . -mindepth 1 | sort | paste -sd' ')" = "./a ./a/lower ./a/same ./d ./d/new ./o ./o/new ./o/sub ./o/sub/new ./x" ] ||
		fail "tree: $(cd t && find . | sort | paste -sd' ')"
	[ "$(cat t/x)" = upper ]
	[ ! -e t/nodir ] || fail "a whiteout made its directory"
}

@test "zstd, uncompressed and Docker media types give the same tree" {
	tarball one <<-'EOF'
	d|etc
	f|etc/hostname|zstd
	l|etc/link|hostname
	EOF
	tarball two <<-'EOF'
	f|etc/.wh.link
	f|etc/motd|hello
	EOF
	layout g one.tar two.tar
	cp -r L L2
	"$VS_TOP/tests/ocimod" L2 g recompress 0 zstd > /dev/null
	"$VS_TOP/tests/ocimod" L2 g recompress 1 none > /dev/null
	run_split oci-unpack -o "$T/a" L g
	assert_success
	run_split oci-unpack -o "$T/b" L2 g
	assert_success
	"$VS_TOP/tests/ocimod" L g mediatype 0 application/vnd.docker.image.rootfs.diff.tar.gzip > /dev/null
	run_split oci-unpack -o "$T/c" L g
	assert_success
	diff <("$VS_TOP/tests/treelist" a) <("$VS_TOP/tests/treelist" b)
	diff <("$VS_TOP/tests/treelist" a) <("$VS_TOP/tests/treelist" c)
	[ "$(cat b/etc/hostname)" = zstd ] && [ ! -e b/etc/link ]
}

@test "malicious layers are refused, naming the entry, with nothing written outside" {
	mkdir -p outside out
	echo secret > outside/secret
	local o=$T/outside
	# name  description (entries, separated by ';')  expected message
	local cases=(
		"dotdot|f|../outside/evil|x|'\.\.' in the path"
		"deep|d|a;f|a/../../outside/evil|x|'\.\.' in the path"
		"absolute|f|$o/evil|x|absolute path"
		"symlink-then-write|l|etc|$o;f|etc/evil|x|through the symlink 'etc'"
		"relative-symlink|l|up|../../../../../../..$o;f|up/evil|x|through the symlink 'up'"
		"hardlink-outside|h|evil|../outside/secret|hardlink to '\.\./outside/secret'"
		"hardlink-absolute|h|evil|$o/secret|hardlink to '$o/secret'"
		"hardlink-via-symlink|l|s|$o;h|evil|s/secret|through the symlink 's'"
		"whiteout-via-symlink|l|s|$o;f|s/.wh.secret|through the symlink 's'"
		"opaque-via-symlink|l|s|$o;f|s/.wh..wh..opq|through the symlink 's'"
		"whiteout-dot|f|.wh..|x|a whiteout of '\.'"
		"whiteout-dotdot|f|.wh...|x|a whiteout of '\.\.'"
	)
	for c in "${cases[@]}"; do
		local name=${c%%|*} rest=${c#*|}
		local want=${rest##*|} spec=${rest%|*}
		rm -rf L
		tr ';' '\n' <<< "$spec" | tarball "$name"
		layout x "$name.tar"
		run_split oci-unpack -o "$T/out/t" L x
		echo "case $name"	# (shown should the next line fail)
		refused_clean 65 "entry .*$want"
		[ "$(ls outside)" = secret ] || fail "case $name wrote outside: $(ls outside)"
		[ "$(cat outside/secret)" = secret ] || fail "case $name changed outside/secret"
	done
}

@test "bad data is refused as bad data (65), naming the entry, not as an I/O error" {
	mkdir -p out
	local long
	long=$(head -c 5000 /dev/zero | tr '\0' a)
	local cases=(
		"longlink|l|long|$long|entry 'long': a symlink target of 5000 bytes; Linux allows at most 4095"
		"huge|s|big|$((17 << 40))|entry 'big': a file of $((17 << 40)) bytes, more than the filesystem holds"
		"namespace|x|xa|foo.bar|v|entry 'xa': the attribute 'foo.bar' is in no namespace Linux knows"
		"nonamespace|x|xb|user.|v|entry 'xb': the attribute 'user.' is in no namespace"
	)
	for c in "${cases[@]}"; do
		local name=${c%%|*} rest=${c#*|}
		local want=${rest##*|} spec=${rest%|*}
		rm -rf L
		tarball "$name" <<< "$spec"
		layout x "$name.tar"
		run_split oci-unpack -o "$T/out/t" L x
		echo "case $name"	# (shown should the next line fail)
		refused_clean 65 "layer 1: $want"
	done
}

@test "a symlink planted by a lower layer is not followed by an upper one" {
	mkdir -p outside out
	tarball low <<< "l|etc|$T/outside"
	tarball high <<< "f|etc/passwd|root::0:0"
	layout x low.tar high.tar
	run_split oci-unpack -o "$T/out/t" L x
	refused_clean 65 "layer 2: entry 'etc/passwd': the path goes through the symlink 'etc'"
	[ -z "$(ls outside)" ]
}

@test "a layer whose content is not its diff_id is refused, and no tree is left" {
	tarball one <<< "f|file|content"
	layout x one.tar
	mkdir out
	"$VS_TOP/tests/ocimod" L x diffid 0 sha256:0000000000000000000000000000000000000000000000000000000000000000 > /dev/null
	run_split oci-unpack -o "$T/out/t" L x
	refused_clean 65 "layer 1 .*digest sha256:[0-9a-f]{64}, but the image config says sha256:0{64}"
}

@test "a truncated layer is refused with EX_DATAERR" {
	head -c 2000000 /dev/urandom > big
	printf 'f|small|x\n' | tarball one
	tar -rf one.tar big
	layout x one.tar
	mkdir out
	"$VS_TOP/tests/ocimod" L x truncate 0 1000000 > /dev/null
	run_split oci-unpack -o "$T/out/t" L x
	refused_clean 65 "layer 1: .*truncated"
}

@test "an unsupported media type, a missing blob, an index: clear refusals" {
	tarball one <<< "f|file|content"
	layout x one.tar
	mkdir out
	cp -r L L2
	"$VS_TOP/tests/ocimod" L x mediatype 0 application/vnd.oci.image.layer.v1.tar+bzip2 > /dev/null
	run_split oci-unpack -o "$T/out/t" L x
	refused_clean 65 "layer 1 \(sha256:[0-9a-f]+\) has an unsupported media type: application/vnd.oci.image.layer.v1.tar\+bzip2"
	rm L2/blobs/sha256/"$(jq -r '.layers[0].digest' "L2/blobs/sha256/$(manifest_of L2 x | cut -d: -f2)" | cut -d: -f2)"
	run_split oci-unpack -o "$T/out/t" L2 x
	refused_clean 66 "layer 1 .* is not in the cache"
	run_split oci-unpack -o "$T/out/t" L2 nosuchref
	refused_clean 66 "nosuchref is not in the cache"
	run_split oci-unpack -o "$T/out/t" nolayout x
	assert_refused 66 "nolayout"
}

@test "pipeline: oci-fetch | oci-unpack, into oci-cache/rootfs/<hex>; the warm path reuses the tree" {
	fixture_registry "$T/reg"
	mkdir ws && cd ws
	oci-fetch -q "$REG/test/multi" > doc
	run_split oci-unpack < doc
	assert_success
	local hex
	hex=$(jq -r .image.digest doc | cut -d: -f2)
	[ "$(jqo .rootfs.path)" = "$T/ws/oci-cache/rootfs/$hex" ]
	[ "$(jqo .image.digest)" = "$(jq -r .image.digest doc)" ] || fail "the image section did not pass through"
	[ "$(jqo .rootfs.reused)" = false ]
	cmp oci-cache/rootfs/$hex/etc/hostname <(echo multi)
	local ino
	ino=$(stat -c %i oci-cache/rootfs/$hex/srv/text)
	run_split oci-unpack -q < doc
	assert_success
	[ "$(jqo .rootfs.reused)" = true ]
	[ "$(stat -c %i oci-cache/rootfs/$hex/srv/text)" = "$ino" ] || fail "the tree was rebuilt"
	[ "$(jqo .rootfs.entries)" -eq "$(find oci-cache/rootfs/$hex -mindepth 1 | wc -l)" ]
	# LAYOUT REF works on the same cache, as the reference was fetched,
	# and -C names the workspace
	cd "$T"
	run_split oci-unpack -C ws oci-cache "$REG/test/multi"
	assert_success
	[ "$(jqo .rootfs.reused)" = true ]
	[ "$(jqo .rootfs.path)" = "$T/ws/oci-cache/rootfs/$hex" ]
	kill "$REG_PID"
}

@test "-o: a tree for another image is replaced; a directory that is not ours is refused" {
	tarball one <<< "f|one|1"
	tarball two <<< "f|two|2"
	layout a one.tar
	layout b two.tar
	run_split oci-unpack -o "$T/t" L a
	assert_success
	run_split oci-unpack -o "$T/t" L b
	assert_success
	[ "$(jqo .rootfs.reused)" = false ]
	[ -e t/two ] && [ ! -e t/one ]
	[ -z "$(find . -maxdepth 1 -name '.t.tmp-*')" ]
	mkdir mine && echo keep > mine/data
	run_split oci-unpack -o "$T/mine" L a
	assert_refused 73 "mine exists and is not a tree oci-unpack made"
	[ "$(cat mine/data)" = keep ]
	mkdir empty
	run_split oci-unpack -o "$T/empty" L a
	assert_success
	[ -e empty/one ]
}

@test "an interrupted unpack leaves nothing under the final name; the next run cleans up" {
	"$VS_TOP/scripts/mkoci" -b 400 big > /dev/null
	mkdir out
	oci-unpack -q -o "$T/out/t" big big > /dev/null 2> err &
	local pid=$!
	while [ -z "$(find out -maxdepth 2 -path '*/.t.tmp-*/data' 2>/dev/null)" ]; do
		kill -0 "$pid" 2>/dev/null || fail "oci-unpack ended before it could be interrupted: $(cat err)"
		sleep 0.05
	done
	kill -TERM "$pid"
	local rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 143 ] || fail "exit status $rc after SIGTERM: $(cat err)"
	[ ! -e out/t ] && [ -z "$(find out -name '.t.tmp-*')" ] || fail "left: $(ls -A out)"
	# kill -9 cannot be cleaned up after; the next run does it
	oci-unpack -q -o "$T/out/t" big big > /dev/null 2> err &
	pid=$!
	while [ -z "$(find out -maxdepth 2 -path '*/.t.tmp-*/data' 2>/dev/null)" ]; do
		kill -0 "$pid" 2>/dev/null || fail "oci-unpack ended before it could be killed"
		sleep 0.05
	done
	kill -KILL "$pid"
	wait "$pid" || true
	[ ! -e out/t ]
	run_split oci-unpack -q -o "$T/out/t" big big
	assert_success
	[ -z "$(find out -name '.t.tmp-*')" ] || fail "a stale temporary tree was not removed"
	[ "$(du -sm --apparent-size out/t/data | cut -f1)" -ge 399 ]
}

teardown() {
	[ -z "${R:-}" ] || rm -rf "$R"
}

@test "as an ordinary user: ownership, devices and root-only attributes are recorded (rootless)" {
	need_root "building the fixture and changing to another user need root"
	# somewhere the user can reach (bats' own directories are private)
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	chmod 755 "$R"
	cp -a "$RICH" "$R/rich"
	cd "$R"
	mkdir out && chown nobody out
	run_split runuser -u nobody -- "$VS_BIN/oci-unpack" -o "$R/out/t" rich rich
	assert_success
	[ "$(jqo .rootfs.rootless)" = true ]
	assert_equal "$stderr" "oci-unpack: rootless: the owners of 1 symlink(s) or fifo(s) and the attributes of 0 could not be recorded (Linux keeps user.* attributes on files and directories only)"
	cd out/t
	[ "$(stat -c %U bin/su)" = nobody ]
	[ "$(getfattr --only-values -e hex -n user.rootlesscontainers etc/owned 2>/dev/null | xxd -p)" = 08e80710e907 ] ||
		fail "etc/owned: $(getfattr -d -m - -e hex etc/owned)"
	[ "$(getfattr --only-values -n user.vmstrap.device dev/sda)" = "b 8 0" ]
	[ "$(getfattr --only-values -n user.vmstrap.device dev/null)" = "c 1 3" ]
	[ -f dev/sda ] && [ ! -s dev/sda ]
	[ "$(stat -c %a dev/sda)" = 660 ]
	[ -p dev/initctl ]
	getfattr -n user.vmstrap.xattr.security.capability bin/ping > /dev/null
	getfattr -n user.vmstrap.xattr.trusted.vmstrap bin/su > /dev/null
	[ "$(stat -c %a srv)" = 700 ] && [ "$(stat -c %a tmp)" = 1777 ]
	[ "$(stat -c %a bin/su)" = 4755 ] && [ "$(stat -c %a bin/sg)" = 2755 ]
	[ "$(stat -c %a etc/readonly)" = 444 ] && [ "$(getfattr --only-values -n user.note etc/readonly)" = ro ]
	cd "$R"
	# what umoci's rootless mode records, we record the same way; we
	# add our own records, and keep the attribute of a read-only file,
	# which umoci drops (user.* attributes need write permission)
	runuser -u nobody -- umoci unpack --rootless --image rich:rich out/u > /dev/null 2>&1
	diff <("$VS_TOP/tests/treelist" -d out/u/rootfs) \
		<("$VS_TOP/tests/treelist" -d out/t | sed -E 's/,?user\.vmstrap\.[a-z.]+=[0-9a-f]+//g; s/\[,/[/
			/^etc\/readonly /s/\[user.note=726f\]/[]/')
	[ "$(stat -c %a out/t/ro)" = 555 ] && [ "$(stat -c %a out/t/ro/sub)" = 555 ]
	run_split runuser -u nobody -- "$VS_BIN/oci-unpack" -o "$R/out/t" rich rich
	assert_success
	[ "$(jqo .rootfs.reused)" = true ]
	# and it can replace what it made, directories without write permission too
	tarball other <<< "f|other|1"
	layout other other.tar
	chmod -R a+rX L
	run_split runuser -u nobody -- "$VS_BIN/oci-unpack" -o "$R/out/t" L other
	assert_success
	[ "$(ls out/t)" = other ]
	[ -z "$(find out -name '.t.tmp-*')" ]
}

@test "a directory whited out and made again does not get its old mode back" {
	printf 'd|c\nf|c/old|1\n' | "$VS_TOP/tests/mktar" one.tar
	printf 'f|.wh.c\nf|c/z|2\n' | "$VS_TOP/tests/mktar" two.tar
	# layer 1's c is world-writable and sticky
	python3 -c '
import tarfile, io
src = tarfile.open("one.tar"); out = tarfile.open("one2.tar", "w", format=tarfile.PAX_FORMAT)
for m in src.getmembers():
    if m.name == "c": m.mode = 0o1777
    out.addfile(m, src.extractfile(m) if m.isfile() else None)
out.close()'
	layout x one2.tar two.tar
	run_split oci-unpack -o "$T/t" L x
	assert_success
	[ "$(stat -c %a t/c)" = 755 ] || fail "c is $(stat -c %a t/c)"
	[ -e t/c/z ] && [ ! -e t/c/old ]
}

@test "a stamp is not taken for a directory made again in the tree's place" {
	tarball a <<< "f|a|1"
	tarball b <<< "f|b|2"
	layout a a.tar
	layout b b.tar
	run_split oci-unpack -o "$T/t" L a
	assert_success
	rm -rf t && mkdir t
	run_split oci-unpack -o "$T/t" L a
	assert_success
	[ "$(jqo .rootfs.reused)" = false ] && [ -e t/a ]
	rm -rf t && mkdir t && echo precious > t/thesis
	run_split oci-unpack -o "$T/t" L b
	assert_refused 73 "not a tree oci-unpack made"
	[ "$(cat t/thesis)" = precious ]
}

@test "the cache's trees are private to their owner" {
	tarball a <<< "f|a|1"
	layout a a.tar
	run_split oci-unpack L a
	assert_success
	[ "$(stat -c %a L/rootfs)" = 700 ]
	chmod 755 L/rootfs
	run_split oci-unpack L a
	assert_success
	[ "$(stat -c %a L/rootfs)" = 700 ]
}

@test "a layer not compressed as its media type says is refused; an empty layer is an empty tree" {
	tarball one <<< "f|file|content"
	layout x one.tar
	mkdir out
	cp -r L L2
	# a plain tar labelled gzip
	"$VS_TOP/tests/ocimod" L x recompress 0 none > /dev/null
	"$VS_TOP/tests/ocimod" L x mediatype 0 application/vnd.oci.image.layer.v1.tar+gzip > /dev/null
	run_split oci-unpack -o "$T/out/t" L x
	refused_clean 65 "layer 1 \(sha256:[0-9a-f]+\): its media type says application/vnd.oci.image.layer.v1.tar\+gzip, but it is not gzip-compressed"
	# gzip labelled zstd
	"$VS_TOP/tests/ocimod" L2 x mediatype 0 application/vnd.oci.image.layer.v1.tar+zstd > /dev/null
	run_split oci-unpack -o "$T/out/t" L2 x
	refused_clean 65 "but it is not zstd-compressed"
	# an empty layer (umoci makes it a gzip of nothing; as a plain tar it
	# is a 0-byte blob): no entries, as umoci unpacks it
	: > empty
	layout e empty
	run_split oci-unpack -o "$T/out/e" L e
	assert_success
	[ "$(jqo .rootfs.entries)" = 0 ] && [ -z "$(ls -A out/e)" ]
	umoci unpack --image L:e out/u > /dev/null
	[ -z "$(ls -A out/u/rootfs)" ]
	"$VS_TOP/tests/ocimod" L e recompress 0 none > /dev/null
	[ -n "$(find L/blobs -size 0)" ] || fail "no 0-byte blob"
	run_split oci-unpack -o "$T/out/e0" L e
	assert_success
	[ "$(jqo .rootfs.entries)" = 0 ]
	# a 0-byte blob said to be gzip is not gzip
	"$VS_TOP/tests/ocimod" L e mediatype 0 application/vnd.oci.image.layer.v1.tar+gzip > /dev/null
	run_split oci-unpack -o "$T/out/t" L e
	refused_clean 65 "is not gzip-compressed"
}

@test "a directory declared again takes the upper entry's attributes, not the lower's" {
	python3 -c '
import tarfile
def layer(name, xattrs):
    t = tarfile.open(name, "w", format=tarfile.PAX_FORMAT)
    i = tarfile.TarInfo("d"); i.type = tarfile.DIRTYPE; i.mode = 0o755
    i.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
    t.addfile(i)
    t.close()
layer("one.tar", {"user.old": "1", "user.keep": "1", "trusted.old": "1"})
layer("two.tar", {"user.keep": "2"})'
	layout x one.tar two.tar
	run_split oci-unpack -o "$T/t" L x
	assert_success
	[ "$(getfattr --only-values -n user.keep t/d)" = 2 ]
	[ -z "$(getfattr -d -m - t/d 2>/dev/null | grep -E 'old')" ] ||
		fail "the lower layer's attributes stayed: $(getfattr -d -m - t/d)"
	umoci unpack --image L:x u > /dev/null 2>&1
	diff <("$VS_TOP/tests/treelist" u/rootfs) <("$VS_TOP/tests/treelist" t)
}

@test "root in a user namespace that maps one uid unpacks rootless" {
	need_root "unshare -r maps root to root"
	unshare -r true 2>/dev/null || skip "user namespaces are disabled here (unshare -r fails)"
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	cp -a "$RICH" "$R/rich"
	run_split unshare -r "$VS_BIN/oci-unpack" -o "$R/t" "$R/rich" rich
	assert_success
	[ "$(jqo .rootfs.rootless)" = true ]
	[ "$(getfattr --only-values -e hex -n user.rootlesscontainers "$R/t/etc/owned" 2>/dev/null | xxd -p)" = 08e80710e907 ]
	[ "$(getfattr --only-values -n user.vmstrap.device "$R/t/dev/sda")" = "b 8 0" ]
}

@test "a tree deeper than the open-file limit: built when the hard limit allows, else refused with nothing left" {
	python3 -c '
import tarfile, io
t = tarfile.open("deep.tar", "w", format=tarfile.PAX_FORMAT)
p = ""
for i in range(1200):
    p += ("/" if p else "") + "d"
    i = tarfile.TarInfo(p); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
i = tarfile.TarInfo(p + "/f"); i.size = 5; t.addfile(i, io.BytesIO(b"deep\n"))
t.close()'
	layout x deep.tar
	mkdir out
	# (valgrind keeps the open-file limit its own: it is raised for the
	# tool only when the tool runs alone)
	local soft=64
	[ "${VALGRIND:-}" != 1 ] || soft=$(ulimit -Hn)
	run_split bash -c 'ulimit -Sn "$2" && exec "$0" -q -o "$1" L x' "$VS_BIN/oci-unpack" "$T/out/t" "$soft"
	assert_success
	[ "$(jqo .rootfs.entries)" = 1201 ]
	[ "$(cat "out/t/$(printf 'd/%.0s' $(seq 1200))f")" = deep ]
	run_split bash -c 'ulimit -n 64 && exec "$0" -q -o "$1" L x' "$VS_BIN/oci-unpack" "$T/out/t2"
	assert_refused 71 "the tree is deeper than the limit on open files allows: raise it \(ulimit -n\)"
	[ ! -e out/t2 ] && [ -z "$(find out -maxdepth 1 -name '.t2.tmp-*')" ] || fail "left: $(ls -A out)"
	# the deep tree, replaced, is removed with few descriptors
	tarball one <<< "f|file|1"
	layout y one.tar
	run_split bash -c 'ulimit -n 64 && exec "$0" -q -o "$1" L y' "$VS_BIN/oci-unpack" "$T/out/t"
	assert_success
	[ "$(ls out/t)" = file ] && [ -z "$(find out -maxdepth 1 -name '.t.tmp-*')" ]
}

# waiting_for_lock PID: until PID waits for a flock (/proc/locks shows
# waiters as "-> FLOCK ... PID").
waiting_for_lock() {
	local i
	for ((i = 0; i < 600; i++)); do
		grep -qE -- "-> FLOCK +ADVISORY +WRITE +$1 " /proc/locks && return 0
		kill -0 "$1" 2>/dev/null || fail "it ended without waiting for the lock: $(cat err)"
		sleep 0.1
	done
	fail "it never waited for the lock"
}

@test "SIGTERM while waiting for the tree's lock ends the wait; an ignored SIGHUP stays ignored" {
	tarball one <<< "f|file|1"
	layout x one.tar
	mkdir out
	exec 8> out/.t.lock
	flock 8
	# (8>&-: the lock's descriptor is the test's, not oci-unpack's)
	oci-unpack -q -o "$T/out/t" L x > /dev/null 2> err 8>&- &
	local pid=$! rc=0
	waiting_for_lock "$pid"
	kill -TERM "$pid"
	timeout 5 tail --pid="$pid" -f /dev/null || fail "oci-unpack still waits after SIGTERM"
	wait "$pid" || rc=$?
	[ "$rc" -eq 143 ] || fail "exit status $rc: $(cat err)"
	grep -q "interrupted while waiting for the lock" err || fail "stderr: $(cat err)"
	# nohup: SIGHUP ignored by the parent stays ignored
	(trap '' HUP; exec "$VS_BIN/oci-unpack" -q -o "$T/out/t" L x > out.json 2> err 8>&-) &
	pid=$!
	waiting_for_lock "$pid"
	kill -HUP "$pid"
	sleep 0.2
	kill -0 "$pid" || fail "SIGHUP ended it: $(cat err)"
	exec 8>&-
	wait "$pid" || fail "status $?: $(cat err)"
	[ "$(jq -r .rootfs.reused out.json)" = false ] && [ -e out/t/file ]
}
