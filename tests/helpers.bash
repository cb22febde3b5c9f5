# helpers.bash: what every suite loads.  Tests run the built tools (VS_BIN,
# set by tests/run; valgrind wrappers under VALGRIND=1) against real parts:
# ext4 images checked by e2fsck, loop-mounted XFS for reflinks, QEMU.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

VS_TOP=${VS_TOP:-$(cd "$BATS_TEST_DIRNAME/.." && pwd)}
VS_BIN=${VS_BIN:-$VS_TOP/build/bin}
PATH=$VS_BIN:$PATH:/usr/sbin:/sbin
export PATH
T=$BATS_TEST_TMPDIR

# run_split CMD...: run with stdout in $output and stderr in $stderr.
run_split() {
	run --separate-stderr "$@"
	# Under VALGRIND=1, valgrind's own notes (an unknown system call such
	# as openat2, which the tools then do without) are not the tool's.
	if [ "${VALGRIND:-}" = 1 ] && [ -n "$stderr" ]; then
		stderr=$(grep -avE '^--[0-9]+-- ' <<< "$stderr" || true)
	fi
}

# assert_refused STATUS PATTERN: the command failed with STATUS, printed
# nothing on stdout, and one line on stderr that matches PATTERN (ERE).
assert_refused() {
	local want=$1 pattern=$2
	if [ "$status" -ne "$want" ]; then
		fail "exit status $status, expected $want (stderr: $stderr)"
	fi
	[ -z "$output" ] || fail "stdout is not empty: $output"
	[ -n "$stderr" ] || fail "nothing on stderr"
	[[ $stderr =~ $pattern ]] || fail "stderr does not match /$pattern/: $stderr"
}

# assert_one_line: stderr is one line (usage errors add a synopsis line).
assert_one_line() {
	[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ] ||
		fail "stderr has more than one line: $stderr"
}

# assert_no_temp DIR: no temporary file of ours is left in DIR.
assert_no_temp() {
	local left
	left=$(find "$1" -maxdepth 1 -name '.*.tmp-*' 2>/dev/null)
	[ -z "$left" ] || fail "temporary files left: $left"
}

# need_root WHY: skip, saying why, when not root.
need_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root: $1"
}

# mount_loop FSTYPE SIZE DIR [MKFS-ARGS...]: make a filesystem in a file and
# mount it on DIR through a loop device; skip (with the reason) where loop
# mounts are impossible.  Unmounted by unmount_all.
mount_loop() {
	local fs=$1 size=$2 dir=$3
	shift 3
	need_root "loop mounts"
	mkdir -p "$dir"
	truncate -s "$size" "$dir.fs"
	case $fs in
	xfs) mkfs.xfs -q -f "$@" "$dir.fs" ;;
	ext4) mkfs.ext4 -q -F "$@" "$dir.fs" ;;
	esac || fail "mkfs.$fs failed"
	local err
	if ! err=$(mount -o loop "$dir.fs" "$dir" 2>&1); then
		skip "cannot loop-mount here: $err"
	fi
	echo "$dir" >> "$T/.mounts"
}

unmount_all() {
	[ -f "$T/.mounts" ] || return 0
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done < "$T/.mounts"
	rm -f "$T/.mounts"
}

# mkimage PATH SIZE MB: a sparse ext4 image of logical SIZE holding MB
# megabytes of random files and some text, built without mounting.
mkimage() {
	"$VS_TOP/scripts/mkimage" "$1" "$2" "$3" || fail "scripts/mkimage failed"
}

# blocks FILE: 512-byte blocks allocated, as stat reports.
blocks() {
	stat -c %b "$1"
}

# jqo FILTER: apply jq to $output.
jqo() {
	printf '%s' "$output" | jq -r "$1"
}

# start_registry DIR: a real docker-registry on a free loopback port
# (scripts/start-registry).  Sets REG (host:port), REG_PID and REG_LOG.
start_registry() {
	REG=$("$VS_TOP/scripts/start-registry" "$1") || fail "could not start docker-registry"
	REG_PID=$(cat "$1/pid") REG_LOG=$1/log
	export REG REG_PID REG_LOG
}

# registry_requests: how many API requests the registry has answered.
registry_requests() {
	grep -cE '"(GET|HEAD) /v2/[^ ]+ HTTP' "$REG_LOG" || true
}

# push LAYOUT:REF NAME [SKOPEO-ARGS...]: copy a fixture image to the registry.
push() {
	local src=$1 dst=$2
	shift 2
	skopeo copy -q --dest-tls-verify=false "$@" "oci:$src" "docker://$REG/$dst" ||
		fail "skopeo could not push $dst"
}

# start_proxy MODE [COUNT] [FAULTPROXY-ARGS...]: tests/faultproxy in front
# of the registry ($REG).  Sets PROXY (host:port), PROXY_PID and PROXY_DIR;
# write a mode to $PROXY_DIR/port.mode to change it.
start_proxy() {
	local mode=$1 n=${2:--1}
	shift 2 || shift $#
	local fp=${VS_FAULTPROXY:-$VS_TOP/build/tests/faultproxy}
	[ -x "$fp" ] || fail "$fp is not built (make unit)"
	PROXY_DIR=$(mktemp -d "$T/proxy.XXXXXX")
	"$fp" -u "${REG##*:}" -m "$mode" -n "$n" -p "$PROXY_DIR/port" \
		-l "$PROXY_DIR/log" "$@" 2> "$PROXY_DIR/err" &
	PROXY_PID=$!
	for _ in $(seq 100); do
		[ -s "$PROXY_DIR/port" ] && break
		sleep 0.02
	done
	[ -s "$PROXY_DIR/port" ] || fail "faultproxy did not start: $(cat "$PROXY_DIR/err")"
	PROXY=127.0.0.1:$(cat "$PROXY_DIR/port")
	echo "$PROXY_PID" >> "$T/.pids"
}

# tls_registry DIR: a real docker-registry on a free loopback port with TLS
# (a certificate for registry.test from a CA of our own, DIR/ca.pem) and
# htpasswd's Basic authentication (alice, 'wonder land').  Sets TLS_DIR,
# TLS_PORT and TLS_PID.
tls_registry() {
	local d=$1 port
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vmstrap-test-ca \
			-keyout ca.key -out ca.pem
		openssl req -newkey rsa:2048 -nodes -subj /CN=registry.test \
			-keyout reg.key -out reg.csr
		printf 'subjectAltName=DNS:registry.test\n' > ext
		openssl x509 -req -in reg.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-days 2 -extfile ext -out reg.pem
		htpasswd -Bbn alice 'wonder land' > htpasswd
	) > /dev/null 2>&1 || fail "could not make the test CA and htpasswd"
	for _ in 1 2 3 4 5 6 7 8; do
		port=$((20000 + RANDOM % 20000))
		cat > "$d/registry.yml" <<-EOF
		version: 0.1
		log: {level: info, formatter: text}
		storage: {filesystem: {rootdirectory: $d/data}}
		http: {addr: 127.0.0.1:$port, tls: {certificate: $d/reg.pem, key: $d/reg.key}}
		auth: {htpasswd: {realm: vmstrap-test, path: $d/htpasswd}}
		EOF
		docker-registry serve "$d/registry.yml" > "$d/registry.log" 2>&1 &
		TLS_PID=$!
		for _ in $(seq 100); do
			curl -sk -o /dev/null "https://127.0.0.1:$port/v2/" && break 2
			kill -0 "$TLS_PID" 2>/dev/null || break
			sleep 0.05
		done
	done
	export TLS_DIR=$d TLS_PORT=$port TLS_PID
}

# login HOST USER:PASS: docker's config.json (in $DOCKER_CONFIG) with
# credentials for HOST.
login() {
	mkdir -p "$DOCKER_CONFIG"
	jq -n --arg h "$1" --arg a "$(printf '%s' "$2" | base64 -w0)" \
		'{auths: {($h): {auth: $a}}}' > "$DOCKER_CONFIG/config.json"
}

kill_started() {
	[ -f "$T/.pids" ] || return 0
	while read -r p; do
		kill "$p" 2>/dev/null || true
	done < "$T/.pids"
	rm -f "$T/.pids"
}

# ext4_dir DIR: a directory on ext4 (no reflink), for the copying fallback:
# a loop-mounted ext4 as root, else the test's own directory if it is ext4;
# skip, saying why, when neither can be had.
ext4_dir() {
	if [ "$(id -u)" -eq 0 ]; then
		mount_loop ext4 4G "$1"
	elif [ "$(stat -f -c %T "$T")" = ext2/ext3 ]; then
		mkdir -p "$1"
	else
		skip "needs root for a loop-mounted ext4, and $T is on $(stat -f -c %T "$T")"
	fi
}

# blobs_verify: every blob in ./oci-cache has the digest it is named by.
blobs_verify() {
	local f
	for f in oci-cache/blobs/sha256/*; do
		[ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] ||
			fail "blob $f does not match its name"
	done
}

# fixture_registry DIR: the fixture images of scripts/mkoci in $FIX, and a
# registry (start_registry) with test/one and test/multi pushed to it.
fixture_registry() {
	export FIX=$1/fix
	"$VS_TOP/scripts/mkoci" "$FIX" 4 > /dev/null || fail "mkoci failed"
	start_registry "$1/registry"
	push "$FIX:one" test/one:latest
	push "$FIX:multi" test/multi:latest
}

# rich_fixture: as root, scripts/mkrootfs's image (every entry type) in
# $RICH, readable by everyone; nothing otherwise (the tests that use it
# need root and say so).
rich_fixture() {
	export RICH=$BATS_FILE_TMPDIR/rich
	[ "$(id -u)" -eq 0 ] || return 0
	"$VS_TOP/scripts/mkrootfs" "$RICH" rich > /dev/null || fail "mkrootfs failed"
	chmod -R a+rX "$RICH"
}

# assert_ok: the command succeeded; on failure, its stderr is shown too.
assert_ok() {
	[ "$status" -eq 0 ] || fail "exit status $status (stderr: ${stderr:-})"
}

# kill_vms: no QEMU that vmrun started in this test's workspace outlives it
# (only running ones: a stale pid file's number may be another process's
# by now).
kill_vms() {
	local p
	for p in $(cd "$T" && vmrun ls 2>/dev/null | jq -r 'select(.state == "running") | .pid'); do
		kill -9 "$p" 2>/dev/null
	done
	return 0
}

# wait_console NAME PATTERN [SECONDS]: until the console of VM NAME (in
# this test's workspace) shows PATTERN; 30 seconds unless told.
wait_console() {
	local i
	for ((i = 0; i < ${3:-30} * 10; i++)); do
		grep -q "$2" "$T/run/$1/console.log" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "no '$2' on $1's console: $(tail -5 "$T/run/$1/console.log" 2>/dev/null)"
}

# layout REF TAR...: a layout at ./L whose image REF has these layers.
layout() {
	local ref=$1
	shift
	[ -f L/oci-layout ] || umoci init --layout L
	umoci new --image "L:$ref"
	for t in "$@"; do
		umoci raw add-layer --image "L:$ref" "$t" || fail "umoci raw add-layer $t"
	done
}

# tarball NAME: tests/mktar from stdin into NAME.tar.
tarball() {
	"$VS_TOP/tests/mktar" "$1.tar" || fail "mktar $1"
}

# imgsum [-b] FILE: a digest of an image's content that reads only its data
# (tests/imgsum): "unchanged" checks on sparse images in milliseconds; -b,
# of its bytes alone (zeros and holes alike).
imgsum() {
	"$VS_TOP/tests/imgsum" "$@"
}
