#!/usr/bin/env bats
# oci-push, and pulling a base instead of building it: the test guest's
# base (scripts/mkguest, mkbase, kextract) pushed to a real docker-registry
# on loopback, pulled into a fresh workspace by oci-fetch | mkbase |
# kextract and booted under TCG; what the registry has never sent again;
# registry faults through tests/faultproxy; Basic over TLS and Bearer with
# push scope.

load helpers

setup_file() {
	local g=$BATS_FILE_TMPDIR/guest
	"$VS_TOP/scripts/mkguest" -m stay amd64 "$g" > /dev/null || return 1
	mkdir -p "$BATS_FILE_TMPDIR/ws1"
	(cd "$BATS_FILE_TMPDIR/ws1" && "$VS_BIN/mkbase" -q -s 5G -g web -o web-base.img "$g/rootfs" |
		"$VS_BIN/kextract" -q -g web > /dev/null) || return 1
	export G=$g WS1=$BATS_FILE_TMPDIR/ws1
	start_registry "$BATS_FILE_TMPDIR/registry"
	export PLAIN_REG=$REG PLAIN_PID=$REG_PID
	# a registry with TLS and htpasswd's Basic auth
	tls_registry "$BATS_FILE_TMPDIR/tls"
}

teardown_file() {
	kill "$PLAIN_PID" "$TLS_PID" 2>/dev/null || true
}

setup() {
	cd "$T"
	REG=$PLAIN_REG
	export VMRUN_ACCEL=tcg DOCKER_CONFIG=$T/docker
	unset https_proxy HTTPS_PROXY http_proxy HTTP_PROXY SSL_CERT_FILE CURL_CA_BUNDLE
}

teardown() {
	kill_started
	kill_vms
}

# pull REF: a fresh workspace ./ws from REF: oci-fetch | mkbase | kextract,
# the document in ws/doc.json.
pull() {
	rm -rf ws
	mkdir ws
	(cd ws && oci-fetch -q --insecure "$1" | mkbase -q -g web | kextract -q -g web > doc.json)
}

# pull_disk REF: the same without the kernel (an image of mkimage's).
pull_disk() {
	rm -rf ws
	mkdir ws
	(cd ws && oci-fetch -q --insecure "$1" | mkbase -q -g web > doc.json)
}

@test "-h, -V, bad options and operands, a missing image, a running VM's disk: refused, nothing pushed" {
	run_split oci-push -h
	assert_ok
	[[ $output == usage:* ]]
	run_split oci-push -V
	assert_ok
	run_split oci-push -x
	assert_refused 64 "unknown option"
	run_split oci-push
	assert_refused 64 "missing operand"
	run_split oci-push a b c
	assert_refused 64 "too many operands"
	run_split oci-push -j 0 x.img "$REG/t/x:1"
	assert_refused 64 "-j"
	run_split oci-push --chunk-size 1x x.img "$REG/t/x:1"
	assert_refused 64 "invalid size '1x'"
	run_split oci-push x.img 'BAD REF'
	assert_refused 64 ""
	run_split oci-push nosuch.img "$REG/t/x:1"
	assert_refused 66 "nosuch.img"
	run_split oci-push < /dev/null "$REG/t/x:1"
	assert_refused 64 "no image"
	mkdir d
	run_split oci-push d "$REG/t/x:1"
	assert_refused 65 "not a disk image"
	cp --sparse=always "$WS1/web-base.img" vm.img
	qemu-system-x86_64 -accel tcg -display none -nodefaults -S \
		-drive "file=vm.img,format=raw,if=virtio" 2> qemu.err &
	q=$!
	for _ in $(seq 100); do
		grep -qE ":$(stat -c %i vm.img) 10[01] 101\$" /proc/locks && break
		sleep 0.1
	done
	run_split oci-push vm.img "$REG/t/x:1"
	kill "$q"
	assert_refused 75 "in use by a running VM"
	! skopeo inspect --raw --tls-verify=false "docker://$REG/t/x:1" > /dev/null 2>&1 || fail "something was pushed"
}

@test "a base pushed, then pulled into a fresh workspace: the same bytes, no more space, its kernel; it boots under TCG; skopeo reads it" {
	run_split oci-push -C "$WS1" -g web --insecure "$REG/team/web:v1"
	assert_ok
	[ "$(jq -r .push.ref <<< "$output")" = "$REG/team/web:v1" ]
	[ "$(jq -r .push.chunks <<< "$output")" = 160 ]
	[ "$(jq -r '.push.zero > 4 * 1073741824' <<< "$output")" = true ]
	[ "$(jq -r .push.uploaded <<< "$output")" -gt 0 ]
	m=$(skopeo inspect --raw --tls-verify=false "docker://$REG/team/web:v1")
	[ "$(jq -r .artifactType <<< "$m")" = application/vnd.vmstrap.disk.v1 ]
	[ "$(jq -r .config.mediaType <<< "$m")" = application/vnd.vmstrap.disk.config.v1+json ]
	[ "$(jq -r '[.layers[].mediaType] | unique | join(" ")' <<< "$m")" = \
		"application/vnd.vmstrap.disk.chunk.v1+zstd application/vnd.vmstrap.initrd.v1 application/vnd.vmstrap.kernel.v1" ]
	pull "$REG/team/web:v1"
	[ "$(jq -r .image.artifact ws/doc.json)" = disk ]
	[ "$(jq -r .base.from ws/doc.json)" = artifact ]
	[ "$(jq -r .kernel.from ws/doc.json)" = artifact ]
	cmp ws/web-base.img "$WS1/web-base.img"
	cmp ws/kernel/web/Image "$WS1/kernel/web/Image"
	cmp ws/kernel/web/initrd "$WS1/kernel/web/initrd"
	[ "$(stat -c %b ws/web-base.img)" -le $(( $(stat -c %b "$WS1/web-base.img") * 101 / 100 )) ]
	e2fsck -fn ws/web-base.img > /dev/null
	# the layout stays one skopeo reads
	skopeo inspect --raw "oci:ws/oci-cache:$REG/team/web:v1" > /dev/null
	# warm: nothing restored again
	(cd ws && oci-fetch -q --insecure "$REG/team/web:v1" | mkbase -q -g web > again.json)
	[ "$(jq -r .base.reused ws/again.json)" = true ]
	# and it boots
	(cd ws && cowclone -q web-1 < doc.json | vmrun -q -d -g web --mem 512M > vm.json)
	for _ in $(seq 300); do
		grep -q "vmstrap-guest: up web-1" ws/run/web-1/console.log 2>/dev/null && break
		sleep 0.1
	done
	grep -q "vmstrap-guest: up web-1" ws/run/web-1/console.log || fail "it did not boot: $(tail -3 ws/run/web-1/console.log)"
	(cd ws && vmrun -q stop -t 20 web-1)
}

@test "what the registry has is never sent again: an unchanged push sends nothing, a clone 50 MB away two chunks at most, a rerun after kill -9 only what is missing" {
	oci-push -q -C "$WS1" -g web --insecure "$REG/team/web:v2" > first.json
	run_split oci-push -C "$WS1" -g web --insecure "$REG/team/web:v2"
	assert_ok
	[ "$(jq -r .push.uploaded <<< "$output")" = 0 ]
	[ "$(jq -r .push.skipped <<< "$output")" = "$(jq -r '.push.uploaded + .push.skipped' first.json)" ]
	[ "$(jq -r .push.digest <<< "$output")" = "$(jq -r .push.digest first.json)" ]
	[[ $stderr == *"0B sent"* ]]
	# a clone with 50 MB written in it
	cowclone -q "$WS1/web-base.img" clone.img > /dev/null
	head -c 50M /dev/urandom > fifty
	debugfs -w -R "write fifty fifty" clone.img > /dev/null 2>&1
	run_split oci-push -q --insecure clone.img "$REG/team/web:clone"
	assert_ok
	# (two chunks of 32 MiB; and what zstd adds to random data, the
	# config)
	[ "$(jq -r .push.uploaded <<< "$output")" -le $(((2 * 32 + 1) << 20)) ] ||
		fail "sent $(jq -r .push.uploaded <<< "$output") bytes"
	[ "$(jq -r '.push.skipped > 0' <<< "$output")" = true ]
	# pulled where the base it came from is: only the chunks that differ
	# are written, the rest kept from the base (a clone of it)
	pull "$REG/team/web:v2"
	(cd ws && oci-fetch -q --insecure "$REG/team/web:clone" | mkbase -g web > clone.json 2> clone.err)
	grep -q "web-base.img: .* kept from the disk it replaces, .* written" ws/clone.err || fail "$(cat ws/clone.err)"
	cmp ws/web-base.img clone.img
	written=$(sed -n 's/.*, \([0-9.]*\)M written.*/\1/p' ws/clone.err)
	# (the 50 MB touch two or three chunks, and the metadata of the
	# filesystem one or two more; the other 156 are kept)
	[ "$(awk -v w="${written:-999}" 'BEGIN { print (w <= 4 * 32) }')" = 1 ] || fail "$(cat ws/clone.err)"
	# kill -9 in the middle, then a rerun: only what is missing
	mkimage big.img 5G 160
	oci-push -q -j 1 --insecure big.img "$REG/team/big:1" > /dev/null 2>&1 &
	pid=$!
	for _ in $(seq 200); do
		[ "$(grep -c 'PUT /v2/team/big/blobs/uploads' "$REG_LOG")" -ge 2 ] && break
		sleep 0.05
	done
	kill -9 "$pid"
	wait "$pid" 2>/dev/null || true
	had=$(grep -c 'PUT /v2/team/big/blobs/uploads' "$REG_LOG")
	[ "$had" -ge 2 ] || fail "killed before any chunk went"
	run_split oci-push -q --insecure big.img "$REG/team/big:1"
	assert_ok
	[ "$(jq -r '.push.skipped > 0' <<< "$output")" = true ] || fail "$output"
	total=$(( $(jq -r '.push.uploaded + .push.skipped' <<< "$output") ))
	run_split oci-push -q --insecure big.img "$REG/team/big:1"
	[ "$(jq -r .push.skipped <<< "$output")" = "$total" ]
	pull_disk "$REG/team/big:1"
	cmp ws/web-base.img big.img
	# another repository of the same registry: mounted, not sent
	run_split oci-push -q --mount-from team/big big.img "$REG/other/big:1"
	assert_ok
	[ "$(jq -r .push.uploaded <<< "$output")" = 0 ] || fail "$output"
	[ "$(jq -r '.push.mounted > 150 * 1048576' <<< "$output")" = true ] || fail "$output"
	skopeo inspect --raw --tls-verify=false "docker://$REG/other/big:1" > /dev/null
	# a size larger than the artifact's: the base grown, its filesystem too
	rm -rf ws && mkdir ws
	(cd ws && oci-fetch -q --insecure "$REG/other/big:1" | mkbase -q -s 6G > doc.json)
	[ "$(stat -c %s ws/slicer-base.img)" = $((6 << 30)) ]
	e2fsck -fn ws/slicer-base.img > /dev/null
	[ "$(debugfs -R 'stats' ws/slicer-base.img 2>/dev/null | sed -n 's/^Block count: *//p')" -gt 1310720 ]
	run_split mkbase -q -s 5G -o small.img < ws/doc.json
	assert_ok
}

@test "registry faults: 500s and 429s on uploads, a dropped PATCH: pushed all the same; a corrupted chunk on pull: refused, nothing under the base's name" {
	mkimage f.img 5G 40
	start_proxy up500 2
	run_split oci-push -q f.img "$PROXY/team/f:1"
	assert_ok
	[ "$(grep -c ' PUT$' "$PROXY_DIR/log")" -ge 2 ]
	echo up429 > "$PROXY_DIR/port.mode"
	echo 2 > "$PROXY_DIR/port.count"
	mkimage g.img 5G 30
	run_split oci-push -q g.img "$PROXY/team/g:1"
	assert_ok
	echo updrop > "$PROXY_DIR/port.mode"
	echo 2 > "$PROXY_DIR/port.count"
	mkimage h.img 5G 30
	run_split oci-push -q --chunk-size 1M h.img "$PROXY/team/h:1"
	assert_ok
	[ "$(grep -c ' PATCH$' "$PROXY_DIR/log")" -ge 1 ] || fail "no PATCH was dropped: $(cat "$PROXY_DIR/log")"
	for x in f g h; do
		pull_disk "$REG/team/$x:1"
		cmp ws/web-base.img "$x.img" || fail "$x differs"
	done
	# a chunk corrupted in the cache after the pull: mkbase refuses it
	rm -rf ws && mkdir ws
	(cd ws && oci-fetch -q --insecure "$REG/team/h:1" > doc.json)
	cd ws
	b=$(jq -r '.image.layers[0].digest' doc.json)
	f=oci-cache/blobs/sha256/${b#sha256:}
	chmod u+w "$f"
	printf 'x' | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null
	run_split mkbase -q -g web < doc.json
	[ "$status" -eq 65 ] || fail "status $status: $stderr"
	[[ $stderr == *"chunk"*"of the disk artifact"* ]]
	[ ! -e web-base.img ]
	assert_no_temp .
}

@test "Basic over TLS from config.json, Bearer tokens asked with push scope, no credentials to an upload sent to another host; never shown" {
	REG=127.0.0.1:$TLS_PORT start_proxy pass -1
	export https_proxy=http://$PROXY SSL_CERT_FILE=$TLS_DIR/ca.pem
	mkimage t.img 5G 5
	run_split oci-push -q t.img registry.test/team/t:1
	assert_refused 77 "asks for a user name and password"
	login registry.test 'alice:wonder land'
	run_split oci-push t.img registry.test/team/t:1
	assert_ok
	[[ $output$stderr != *wonder* ]]
	rm -rf ws && mkdir ws
	(cd ws && oci-fetch -q registry.test/team/t:1 | mkbase -q -g web > doc.json)
	cmp ws/web-base.img t.img
	kill_started
	unset https_proxy SSL_CERT_FILE
	# Bearer: the token for an upload is asked with push scope
	REG=$PLAIN_REG start_proxy bearer -1 -a 'alice:wonder land'
	login "$PROXY" 'alice:wonder land'
	run_split oci-push -q t.img "$PROXY/team/b:1"
	assert_ok
	grep -q '^/token-scope scope=repository%3Ateam%2Fb%3Apull%2Cpush' "$PROXY_DIR/log" ||
		fail "no token with push scope: $(cat "$PROXY_DIR/log")"
	[[ $output$stderr != *wonder* ]]
	pull_disk "$REG/team/b:1"
	cmp ws/web-base.img t.img
	# an upload sent to another host: no credentials follow it there
	kill_started
	REG=$PLAIN_REG start_proxy bearer+upredirect -1 -a 'alice:wonder land'
	login "$PROXY" 'alice:wonder land'
	mkimage u.img 5G 5
	run_split oci-push -q u.img "$PROXY/team/u:1"
	assert_ok
	[ "$(grep -c '^/objects/.* without-authorization$' "$PROXY_DIR/log")" -ge 2 ] ||
		fail "no upload went elsewhere: $(cat "$PROXY_DIR/log")"
	run grep -c '^/objects/.* with-authorization$' "$PROXY_DIR/log"
	assert_output 0
	pull_disk "$REG/team/u:1"
	cmp ws/web-base.img u.img
}

@test "the push section's keys are the ones vmstrap(7) and oci-push(1) document" {
	mkimage k.img 5G 1
	run_split oci-push -q k.img "$REG/team/k:1"
	assert_ok
	code=$(jq -r '.push | keys_unsorted | .[]' <<< "$output" | sort)
	seven=$(awk '/^\.Ss push$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7" | sort)
	one=$(awk '/^\.Li push$/ {f=1; next} f && /^\.Sh/ {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/oci-push.1" | sort)
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; oci-push.1: $one"
}

@test "vmstrap push GROUP, then vmstrap up on a host whose configuration names the artifact: the VM boots from the pulled base; vmstrap push NAME of a running VM pushes a live snapshot" {
	run_split vmstrap -C "$WS1" push web "$REG/team/vs:1"
	assert_ok
	[ "$(jq -r .ref <<< "$output")" = "$REG/team/vs:1" ]
	run_split vmstrap push web
	assert_refused 64 "push needs a GROUP or a VM NAME, and REF"
	run_split vmstrap push ../x "$REG/team/vs:1"
	assert_refused 64 "invalid group or VM name"
	run_split vmstrap push nosuch "$REG/team/vs:1"
	assert_refused 66 "no VM disk nosuch.img and no group base nosuch-base.img"
	mkdir up
	cd up
	cat > slicer-mac.yaml <<-EOF
	config:
	  image: "$REG/team/vs:1"
	  insecure_registry: true
	  host_groups:
	    - name: web
	      count: 1
	      vcpu: 1
	      ram_gb: 1
	      storage_size: 5G
	EOF
	run_split vmstrap up
	assert_ok
	[ "$(jq -r .from .web-base.img.json)" = artifact ]
	cmp web-base.img "$WS1/web-base.img"
	cmp kernel/web/Image "$WS1/kernel/web/Image"
	for _ in $(seq 300); do
		grep -q "vmstrap-guest: up web-1" run/web-1/console.log 2>/dev/null && break
		sleep 0.1
	done
	grep -q "vmstrap-guest: up web-1" run/web-1/console.log || fail "web-1 did not boot: $(tail -3 run/web-1/console.log)"
	# the running VM's disk: a live snapshot, pushed, then removed
	run_split vmstrap push web-1 "$REG/team/vs:web-1"
	assert_refused 75 "give --pause-ok"
	run_split vmstrap push --pause-ok web-1 "$REG/team/vs:web-1"
	assert_ok
	[ ! -e snapshots ]
	[ "$(skopeo inspect --raw --tls-verify=false "docker://$REG/team/vs:web-1" | jq -r .artifactType)" = application/vnd.vmstrap.disk.v1 ]
	vmstrap -q down
	# stopped: the disk itself, with the kernel it booted
	run_split vmstrap push web-1 "$REG/team/vs:web-1b"
	assert_ok
	cd "$T"
	pull "$REG/team/vs:web-1b"
	cmp ws/web-base.img up/web-1.img
	cmp ws/kernel/web/Image "$WS1/kernel/web/Image"
}
