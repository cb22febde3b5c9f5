#!/usr/bin/env bats
# oci-prune: real OCI layouts (scripts/mkoci's fixtures, umoci's images),
# read back by skopeo and umoci after every prune; LRU by the access
# records; a concurrent user of the cache; kill -9 in the middle of the
# removals (strace slows them down); oci-fetch's automatic pruning on a
# small loop-mounted filesystem against a real docker-registry.

load helpers

setup() {
	cd "$T"
}

teardown() {
	kill_started
	[ -z "${REG_PID:-}" ] || kill "$REG_PID" 2>/dev/null || true
	cd "$T"
	unmount_all
}

# cache: ./oci-cache, a copy of scripts/mkoci's fixture layout (images one,
# multi, amd64, arm64, index).
cache() {
	"$VS_TOP/scripts/mkoci" "$T/fix" 4 > /dev/null || fail "mkoci failed"
	cp -a "$T/fix" oci-cache
}

# refs: the names in ./oci-cache/index.json, sorted, on one line.
refs() {
	jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' oci-cache/index.json | sort | tr '\n' ' '
}

# valid: every entry of index.json names blobs that are there, and skopeo
# reads each image.
valid() {
	local r
	for r in $(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' oci-cache/index.json); do
		skopeo inspect --raw "oci:oci-cache:$r" > /dev/null 2>&1 || fail "skopeo cannot read $r"
	done
	jq -r '.manifests[].digest' oci-cache/index.json | while read -r d; do
		[ -f "oci-cache/blobs/sha256/${d#sha256:}" ] || fail "index.json names $d, which is missing"
	done
	for r in $(jq -r '.manifests[] | select(.mediaType | test("manifest")) | .annotations["org.opencontainers.image.ref.name"]' oci-cache/index.json); do
		d=$(jq -r --arg r "$r" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' oci-cache/index.json)
		for b in $(jq -r '.config.digest, .layers[].digest' "oci-cache/blobs/sha256/${d#sha256:}"); do
			[ -f "oci-cache/blobs/sha256/${b#sha256:}" ] || fail "$r's blob $b is missing"
		done
	done
}

# cachesum: a digest of every file of the cache, names and contents.
cachesum() {
	(cd oci-cache && find . -type f ! -name .lock ! -name .use -print0 | sort -z | xargs -0 sha256sum) | sha256sum
}

# image NAME MB: an image NAME in ./oci-cache with one layer of MB megabytes
# of random data (umoci).
image() {
	mkdir -p "$T/l-$1"
	head -c "${2}M" /dev/urandom > "$T/l-$1/data-$1"
	tar -C "$T/l-$1" -cf "$T/l-$1.tar" "data-$1"
	[ -f oci-cache/oci-layout ] || umoci init --layout oci-cache
	umoci new --image "oci-cache:$1"
	umoci raw add-layer --image "oci-cache:$1" "$T/l-$1.tar"
}

@test "-h, -V, bad options and values, a --keep that names nothing" {
	run_split oci-prune -h
	assert_ok
	[[ $output == usage:* ]]
	run_split oci-prune -V
	assert_ok
	run_split oci-prune -x
	assert_refused 64 "unknown option"
	run_split oci-prune --budget 1x
	assert_refused 64 "invalid size '1x'"
	run_split oci-prune --older-than -1
	assert_refused 64 "older-than"
	run_split oci-prune --older-than soon
	assert_refused 64 "older-than"
	run_split oci-prune extra
	assert_refused 64 "unexpected operand 'extra'"
	# no cache: nothing to prune
	run_split oci-prune
	assert_ok
	[ "$(jq -c .prune.removed.images <<< "$output")" = "[]" ]
	[[ $stderr == *"nothing to prune"* ]]
	cache
	sum=$(cachesum)
	run_split oci-prune --budget 0 --keep nosuch
	assert_refused 66 "--keep nosuch: no such image"
	assert_one_line
	[ "$(cachesum)" = "$sum" ]
	# a configuration that cannot be read: which images it needs is unknown
	printf 'config:\n  image: [\n' > slicer-mac.yaml
	run_split oci-prune --budget 0
	[ "$status" -eq 78 ] || fail "status $status: $stderr"
	[[ $stderr == *"not pruning"* ]]
	[ "$(cachesum)" = "$sum" ]
}

@test "what nothing needs goes: unreferenced blobs, orphan trees, temporary files; every image stays, skopeo and umoci read them" {
	cache
	before=$(refs)
	head -c 5000 /dev/urandom > x
	orphan=$(sha256sum < x | cut -d' ' -f1)
	cp x "oci-cache/blobs/sha256/$orphan"
	mkdir -p "oci-cache/rootfs/$(printf '%064d' 7)/etc" "oci-cache/blobs/sha256/.junk.tmp-abc" 2>/dev/null || true
	rmdir oci-cache/blobs/sha256/.junk.tmp-abc
	echo partial > oci-cache/blobs/sha256/.deadbeef.tmp-XYZ
	# a tree of an image that is there stays
	oci-unpack -q oci-cache one > /dev/null
	one=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "one") | .digest' oci-cache/index.json)
	[ -d "oci-cache/rootfs/${one#sha256:}" ]
	run_split oci-prune
	assert_ok
	[ "$(refs)" = "$before" ]
	[ ! -e "oci-cache/blobs/sha256/$orphan" ]
	[ ! -e "oci-cache/rootfs/$(printf '%064d' 7)" ]
	[ ! -e oci-cache/blobs/sha256/.deadbeef.tmp-XYZ ]
	[ -d "oci-cache/rootfs/${one#sha256:}" ]
	jq -e --arg d "sha256:$orphan" '.prune.removed.digests | index($d) != null' <<< "$output" > /dev/null
	[ "$(jq -r '.prune.removed.trees[0]' <<< "$output")" = "sha256:$(printf '%064d' 7)" ]
	[ "$(jq -r '.prune.removed.temporary | length' <<< "$output")" = 1 ]
	[ "$(jq -r '.prune.removed.bytes >= 5000' <<< "$output")" = true ]
	[ "$(jq -r .prune.dry_run <<< "$output")" = false ]
	valid
	umoci stat --image oci-cache:one > /dev/null
	# nothing more to remove
	run_split oci-prune -q
	assert_ok
	[ "$(jq -r .prune.removed.blobs <<< "$output")" = 0 ]
	[ -z "$stderr" ]
}

@test "-n changes nothing; --budget 0 --keep REF keeps exactly that image, readable, and the others go" {
	cache
	one=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "one") | .digest' oci-cache/index.json)
	sum=$(cachesum)
	run_split oci-prune -n --budget 0 --keep one
	assert_ok
	[ "$(jq -r .prune.dry_run <<< "$output")" = true ]
	[ "$(jq -r '.prune.removed.images | length' <<< "$output")" = 4 ]
	[[ $stderr == *"would remove multi"* ]]
	[ "$(cachesum)" = "$sum" ]
	dry=$(jq -c '.prune.removed | del(.temporary)' <<< "$output")
	run_split oci-prune --budget 0 --keep one
	assert_ok
	# what -n said is what it did
	[ "$(jq -c '.prune.removed | del(.temporary)' <<< "$output")" = "$dry" ]
	[ "$(refs)" = "one " ]
	[ "$(jq -r '.prune.kept[0].why' <<< "$output")" = "--keep" ]
	[ "$(jq -r '.prune.kept[0].digest' <<< "$output")" = "$one" ]
	[[ $stderr == *"removed multi"* ]] && [[ $stderr == *"kept one (--keep)"* ]]
	skopeo inspect --raw oci:oci-cache:one > /dev/null
	! skopeo inspect --raw oci:oci-cache:multi > /dev/null 2>&1 || fail "multi is still there"
	valid
	# only the blobs of one are left
	n=$(ls oci-cache/blobs/sha256 | wc -l)
	[ "$n" = $((1 + $(jq '.layers | length' "oci-cache/blobs/sha256/${one#sha256:}") + 1)) ] || fail "$n blobs left"
	# a digest is a REF too
	run_split oci-prune --budget 0 --keep "$one"
	assert_ok
	[ "$(refs)" = "one " ]
}

@test "least recently used first: --budget stops when it fits, --older-than by days, the workspace's image never goes" {
	image a 3
	image b 3
	image c 3
	image d 3
	for r in a b c d; do
		oci-unpack -q oci-cache "$r" > /dev/null
	done
	set_used() {
		local dg
		dg=$(jq -r --arg r "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' oci-cache/index.json)
		mkdir -p oci-cache/.access
		touch -d "$2" "oci-cache/.access/${dg#sha256:}"
	}
	set_used a "10 days ago"
	set_used b "3 days ago"
	set_used c "1 day ago"
	set_used d "1 hour ago"
	# --older-than 5: a alone
	run_split oci-prune --older-than 5
	assert_ok
	[ "$(refs)" = "b c d " ]
	[ "$(jq -r '.prune.removed.images[0].refs[0]' <<< "$output")" = a ]
	# a budget that two images fit: b goes first, then c; d stays
	total=$(du -sb oci-cache | cut -f1)
	run_split oci-prune --budget 8M
	assert_ok
	[ "$(refs)" = "d " ] || fail "left: $(refs): $stderr"
	[ "$(jq -r '[.prune.removed.images[].refs[0]] | join(" ")' <<< "$output")" = "b c" ]
	valid
	# the image slicer-mac.yaml names is kept, whatever the budget
	image e 2
	printf 'config:\n  image: "e"\n  host_groups: [{name: g, count: 0, storage_size: 5G}]\n' > slicer-mac.yaml
	set_used e "100 days ago"
	run_split oci-prune --budget 0
	assert_ok
	[ "$(refs)" = "e " ]
	[ "$(jq -r '.prune.kept[0].why' <<< "$output")" = "the image of slicer-mac.yaml" ]
	# a tool that uses the cache now: oci-prune waits for it
	flock -s oci-cache/.use sleep 2 &
	sleep 0.2
	t0=$(date +%s%N)
	run_split oci-prune -q
	assert_ok
	[ $(( ($(date +%s%N) - t0) / 1000000 )) -ge 1500 ] || fail "it did not wait for the lock"
	wait
}

@test "kill -9 in the middle of the removals: the layout stays one skopeo reads, and the next prune finishes" {
	command -v strace > /dev/null || skip "strace is not installed (scripts/install-deps installs it)"
	for i in $(seq 12); do
		image "i$i" 1
	done
	[ "$(refs | wc -w)" = 12 ]
	# each unlink slowed down to 50 ms: killed after some, not all
	strace -f -o /dev/null -e trace=unlink,unlinkat -e inject=unlink,unlinkat:delay_enter=50ms \
		oci-prune -q --budget 0 --keep i1 --keep i2 > /dev/null 2>&1 &
	pid=$!
	sleep 0.6
	# (the tracee first: killing strace would set it free at full speed)
	pkill -9 -x oci-prune || true
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	# index.json first, blobs after: whatever is named is whole
	[ "$(refs)" = "i1 i2 " ] || fail "index.json: $(refs)"
	valid
	left=$(ls oci-cache/blobs/sha256 | wc -l)
	[ "$left" -gt 6 ] || fail "the kill came after everything ($left blobs left)"
	run_split oci-prune --budget 0 --keep i1 --keep i2
	assert_ok
	[ "$(refs)" = "i1 i2 " ]
	[ "$(ls oci-cache/blobs/sha256 | wc -l)" = 6 ]
	valid
}

@test "oci-fetch prunes least recently used images when a pull does not fit, never the one pulled; VMSTRAP_NO_AUTO_PRUNE=1 does not" {
	image a 40
	image b 40
	start_registry "$T/registry"
	skopeo copy -q --dest-tls-verify=false oci:oci-cache:a "docker://$REG/t/a:1"
	skopeo copy -q --dest-tls-verify=false oci:oci-cache:b "docker://$REG/t/b:1"
	rm -rf oci-cache
	mount_loop ext4 80M "$T/small" -m 0
	cd "$T/small"
	run_split oci-fetch -q --insecure "$REG/t/a:1"
	assert_ok
	avail=$(df -B1 --output=avail . | tail -1)
	[ "$avail" -lt $((44 << 20)) ] || fail "the filesystem is too large for the test: $avail free"
	# off: the pull fails for want of space, and a is still there
	run_split env VMSTRAP_NO_AUTO_PRUNE=1 oci-fetch -q --insecure "$REG/t/b:1"
	[ "$status" -ne 0 ] || fail "b fitted without pruning"
	[[ $stderr == *"No space left"* ]] || fail "$stderr"
	[ "$(refs)" = "$REG/t/a:1 " ]
	assert_no_temp oci-cache/blobs/sha256
	# on (the default): a is pruned, b pulled
	run_split oci-fetch --insecure "$REG/t/b:1"
	assert_ok
	[[ $stderr == *"pruned $REG/t/a:1"*"to make room"* ]] || fail "$stderr"
	[ "$(refs)" = "$REG/t/b:1 " ]
	skopeo inspect --raw "oci:oci-cache:$REG/t/b:1" > /dev/null
	valid
	# the one pulled is never pruned: b again, warm, changes nothing
	run_split oci-fetch -q --insecure "$REG/t/b:1"
	assert_ok
	[ "$(refs)" = "$REG/t/b:1 " ]
}

@test "the prune section's keys are the ones vmstrap(7) and oci-prune(1) document" {
	cache
	run_split oci-prune -q -n
	assert_ok
	code=$(jq -r '.prune | keys_unsorted | .[]' <<< "$output" | sort)
	seven=$(awk '/^\.Ss prune$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7" | sort)
	one=$(awk '/^\.Li prune$/ {f=1; next} f && /^\.Sh/ {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/oci-prune.1" | sort)
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; oci-prune.1: $one"
	for k in $(jq -r '.prune.removed | keys[]' <<< "$output"); do
		grep -q "Li $k" "$VS_TOP/man/oci-prune.1" || fail "oci-prune.1 does not name removed.$k"
	done
}
