#!/usr/bin/env bats
# oci-fetch when things go wrong: faults injected by tests/faultproxy in
# front of a real docker-registry, authentication (Basic over TLS with a
# test CA, and Bearer tokens), redirects, and a kill -9 in mid-download.

load helpers

setup_file() {
	fixture_registry "$BATS_FILE_TMPDIR"
	export PLAIN_REG=$REG PLAIN_PID=$REG_PID

	# A second registry with TLS and htpasswd's Basic authentication.
	tls_registry "$BATS_FILE_TMPDIR/tls"
	skopeo copy -q --dest-tls-verify=false --dest-creds 'alice:wonder land' \
		"oci:$FIX:one" "docker://127.0.0.1:$TLS_PORT/test/one:latest" ||
		fail "could not push to the TLS registry"
}

teardown_file() {
	kill "$PLAIN_PID" "$TLS_PID" 2>/dev/null || true
}

setup() {
	cd "$T"
	REG=$PLAIN_REG
	unset no_proxy NO_PROXY https_proxy HTTPS_PROXY http_proxy HTTP_PROXY
	unset CURL_CA_BUNDLE SSL_CERT_FILE
	export DOCKER_CONFIG=$T/docker
	unset REGISTRY_AUTH_FILE XDG_RUNTIME_DIR
}

teardown() {
	kill_started
}

# login HOST USER:PASS: a docker config.json with credentials for HOST.
total_size() {
	jq '[.image.layers[].size] | add' <<< "$1"
}

@test "a corrupted blob is refused and nothing is kept under its digest" {
	start_proxy corrupt
	run_split oci-fetch -q -j 1 "$PROXY/test/one"
	assert_refused 65 "blob sha256:[0-9a-f]+ is corrupt: its content's digest is sha256:"
	assert_one_line
	d=$(grep -oE 'blob sha256:[0-9a-f]{64}' <<< "$stderr" | cut -d: -f2)
	[ ! -e "oci-cache/blobs/sha256/$d" ]
	[ -z "$(find oci-cache -name '*.partial')" ]
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
}

@test "a body longer than its descriptor is cut off and refused" {
	start_proxy oversize
	run_split oci-fetch -q -j 1 "$PROXY/test/one"
	assert_refused 65 "the registry sent more than its [0-9]+ bytes; refused"
	[ -z "$(find oci-cache -name '*.partial')" ]
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
}

@test "500s, then success" {
	start_proxy 500 3
	run_split oci-fetch -q "$PROXY/test/multi"
	assert_success
	blobs_verify
}

@test "500s that do not stop: a bounded number of tries, then the registry's status" {
	start_proxy 500
	run_split oci-fetch -q -j 1 "$PROXY/test/one"
	assert_refused 69 "^oci-fetch: $PROXY: blob sha256:[0-9a-f]+: HTTP 500 \(after 6 tries\)$"
	assert_one_line
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
}

@test "429 with Retry-After is honoured, then success" {
	start_proxy 429 1
	start=$SECONDS
	run_split oci-fetch -q -j 1 "$PROXY/test/one"
	assert_success
	[ $((SECONDS - start)) -ge 1 ] || fail "Retry-After: 1 was not waited for"
	blobs_verify
}

# blob_gets DIGEST: how many GETs of the blob the registry has answered.
blob_gets() {
	grep -cE "\"GET /v2/[^ ]+/blobs/$1 HTTP" "$REG_LOG" || true
}

@test "a whole answer shorter than its descriptor is refused at once, and its partial file removed" {
	# One short answer (its Content-Length is half the blob's size), once:
	# another try would get the rest, but no try mends bad data.
	start_proxy truncate 1
	cfg=$(skopeo inspect --raw --tls-verify=false "docker://$REG/test/one:latest" | jq -r .config.digest)
	before=$(blob_gets "$cfg")
	run_split oci-fetch -q -j 1 "$PROXY/test/one"
	assert_refused 65 "^oci-fetch: $PROXY: blob $cfg: the registry sent [0-9]+ of the [0-9]+ bytes the manifest says; refused$"
	assert_one_line
	[ "$(( $(blob_gets "$cfg") - before ))" -eq 1 ] || fail "the blob was asked for again"
	[ -z "$(find oci-cache -name '*.partial')" ]
	[ ! -e "oci-cache/blobs/sha256/${cfg#sha256:}" ]
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
	assert_no_temp oci-cache
}

@test "a registry that accepts connections and never answers is given up on in OCI_FETCH_TIMEOUT seconds" {
	start_proxy hang
	start=$SECONDS
	OCI_FETCH_TIMEOUT=2 run_split timeout 60 oci-fetch -q "$PROXY/test/one"
	assert_refused 69 "^oci-fetch: no answer from $PROXY in 2 s$"
	assert_one_line
	[ $((SECONDS - start)) -le 8 ] || fail "gave up after $((SECONDS - start)) s"
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
	[ -z "$(find oci-cache -name '*.partial')" ]
	assert_no_temp oci-cache
}

@test "a blob that stalls after its headers is given up on in OCI_FETCH_TIMEOUT seconds, all tries together" {
	start_proxy stall
	start=$SECONDS
	OCI_FETCH_TIMEOUT=3 run_split timeout 60 oci-fetch -q "$PROXY/test/multi"
	assert_refused 69 "^oci-fetch: no answer from $PROXY in 3 s, for blob sha256:[0-9a-f]{64}$"
	assert_one_line
	[ $((SECONDS - start)) -le 9 ] || fail "gave up after $((SECONDS - start)) s"
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
	[ -z "$(find oci-cache -name '*.partial')" ]
	assert_no_temp oci-cache
}

@test "a connection dropped mid-blob resumes where it stopped" {
	start_proxy drop 2
	run_split oci-fetch -q -j 1 "$PROXY/test/multi"
	assert_success
	blobs_verify
	# Only the missing bytes were asked for again.
	cfg=$(stat -c %s "oci-cache/blobs/sha256/$(jqo .image.config | cut -d: -f2)")
	[ "$(jqo .image.fetched)" -eq $(( $(total_size "$output") + cfg )) ]
}

@test "two slow fetches of one image at once neither wait for each other nor fail" {
	start_proxy slow -1 -r 4194304
	timeout 60 oci-fetch -q "$PROXY/test/multi" > a.json 2> a.err & a=$!
	sleep 0.3
	timeout 60 oci-fetch -q -j 1 "$PROXY/test/multi" > b.json 2> b.err & b=$!
	wait "$a" || fail "first: $(cat a.err)"
	wait "$b" || fail "second: $(cat b.err)"
	blobs_verify
	[ "$(jq -r .image.digest a.json)" = "$(jq -r .image.digest b.json)" ]
	[ -z "$(find oci-cache -name '*.partial')" ]
}

@test "a partial file that is already whole is checked and kept" {
	run_split oci-fetch -q "$REG/test/one"
	assert_success
	layer=$(jqo '.image.layers[0].digest' | cut -d: -f2)
	mv "oci-cache/blobs/sha256/$layer" "oci-cache/blobs/sha256/.$layer.partial"
	rm oci-cache/index.json
	echo '{"schemaVersion":2,"manifests":[]}' > oci-cache/index.json
	before=$(registry_requests)
	run_split oci-fetch -q "$REG/test/one"
	assert_success
	blobs_verify
	[ "$(jqo .image.reused)" -ge "$(jqo '.image.layers[0].size')" ]
	[ -z "$(find oci-cache -name '*.partial')" ]
}

@test "kill -9 in mid-download, then a rerun fetches only what is missing" {
	start_proxy slow -1 -r 1048576
	oci-fetch -q -j 1 "$PROXY/test/multi" > /dev/null 2>&1 &
	pid=$!
	for _ in $(seq 300); do
		p=$(find oci-cache -name '*.partial' -size +300k 2>/dev/null | head -1)
		[ -n "$p" ] && break
		sleep 0.02
	done
	[ -n "$p" ] || fail "no partial blob appeared"
	kill -9 "$pid"
	wait "$pid" 2>/dev/null || true
	had=$(stat -c %s "$p")
	echo pass > "$PROXY_DIR/port.mode"
	run_split oci-fetch -q "$PROXY/test/multi"
	assert_success
	blobs_verify
	total=$(( $(total_size "$output") + $(stat -c %s "oci-cache/blobs/sha256/$(jqo .image.config | cut -d: -f2)") ))
	[ "$(jqo .image.fetched)" -le $((total - had)) ] ||
		fail "fetched $(jqo .image.fetched) of $total with $had already there"
	[ "$(jqo .image.reused)" -ge "$had" ]
	[ -z "$(find oci-cache -name '*.partial')" ]
}

@test "a registry that ignores Range: the download starts again and succeeds" {
	start_proxy drop+norange 1
	run_split oci-fetch -q -j 1 "$PROXY/test/multi"
	assert_success
	blobs_verify
	cfg=$(stat -c %s "oci-cache/blobs/sha256/$(jqo .image.config | cut -d: -f2)")
	[ "$(jqo .image.fetched)" -gt $(( $(total_size "$output") + cfg )) ] ||
		fail "expected the dropped blob to be fetched twice"
	[ "$(jqo .image.reused)" -eq 0 ]
}

@test "Bearer: a token that expires is renewed on 401" {
	start_proxy bearer+expire
	run_split oci-fetch -q -j 1 "$PROXY/test/multi"
	assert_success
	blobs_verify
	[ "$(grep -c '^/token issued$' "$PROXY_DIR/log")" -ge 2 ]
}

@test "Bearer: an anonymous token from the challenge's realm" {
	start_proxy bearer
	run_split oci-fetch -q "$PROXY/test/multi"
	assert_success
	blobs_verify
}

@test "Bearer: a token for credentials from docker's config.json, refused without them" {
	start_proxy bearer -1 -a 'alice:wonder land'
	run_split oci-fetch -q "$PROXY/test/one"
	assert_refused 77 "the token service refused an anonymous token"
	login "$PROXY" 'alice:wonder land'
	run_split oci-fetch -q "$PROXY/test/one"
	assert_success
	[[ $output != *wonder* ]]
}

@test "no Authorization is sent after a redirect to another host" {
	start_proxy bearer+redirect -1 -a 'alice:wonder land'
	login "$PROXY" 'alice:wonder land'
	run_split oci-fetch -q "$PROXY/test/multi"
	assert_success
	blobs_verify
	[ "$(grep -c ' without-authorization$' "$PROXY_DIR/log")" -ge 4 ]
	run grep -c ' with-authorization$' "$PROXY_DIR/log"
	assert_output 0
}

@test "a redirect target that asks for credentials gets none" {
	start_proxy bearer+redirect+redirect401 -1 -a 'alice:wonder land'
	login "$PROXY" 'alice:wonder land'
	run_split oci-fetch -q -j 1 "$PROXY/test/one"
	assert_refused 77 "HTTP 401"
	run grep -c 'with-authorization$' "$PROXY_DIR/log"
	assert_output 0
	run grep -c '^/evil-token' "$PROXY_DIR/log"
	assert_output 0
}

@test "TLS verified with a CA from SSL_CERT_FILE, and HTTP Basic from config.json" {
	# The proxy tunnels CONNECT to the TLS registry, whatever the name.
	REG=127.0.0.1:$TLS_PORT start_proxy pass -1
	export https_proxy=http://$PROXY
	login registry.test 'alice:wonder land'
	SSL_CERT_FILE=$TLS_DIR/ca.pem run_split oci-fetch -q registry.test/test/one
	assert_success
	[ "$(jqo .image.registry)" = registry.test ]
	blobs_verify
	[[ $output != *wonder* ]]
	# CURL_CA_BUNDLE, as curl(1) reads it, comes first.
	rm -rf oci-cache
	SSL_CERT_FILE=/dev/null CURL_CA_BUNDLE=$TLS_DIR/ca.pem run_split oci-fetch -q registry.test/test/one
	assert_success
}

@test "TLS: an unknown CA is refused; --insecure allows it for that registry" {
	REG=127.0.0.1:$TLS_PORT start_proxy pass -1
	export https_proxy=http://$PROXY
	login registry.test 'alice:wonder land'
	run_split oci-fetch -q registry.test/test/one
	assert_refused 69 "registry.test: .*(certificate|SSL)"
	run_split oci-fetch -q --insecure registry.test/test/one
	assert_success
	# The configuration's insecure_registry does the same, for the
	# registry of its config.image and no other.
	rm -rf oci-cache
	printf 'config:\n  image: registry.test/test/one\n  insecure_registry: true\n' > slicer-mac.yaml
	run_split oci-fetch -q
	assert_success
	[ "$(jqo .image.registry)" = registry.test ]
	rm -rf oci-cache
	printf 'config:\n  image: other.test/x\n  insecure_registry: true\n' > slicer-mac.yaml
	run_split oci-fetch -q registry.test/test/one
	assert_refused 69 "registry.test: .*(certificate|SSL)"
}

@test "Basic: no credentials, or wrong ones, are refused without showing them" {
	REG=127.0.0.1:$TLS_PORT start_proxy pass -1
	export https_proxy=http://$PROXY SSL_CERT_FILE=$TLS_DIR/ca.pem
	run_split oci-fetch -q registry.test/test/one
	assert_refused 77 "registry.test asks for a user name and password, and no credentials for it were found"
	login registry.test 'alice:not the password'
	run_split oci-fetch -q registry.test/test/one
	assert_refused 77 "registry.test: .*HTTP 401"
	[[ $stderr != *"not the password"* ]]
	[[ $stderr != *"$(printf 'alice:not the password' | base64 -w0)"* ]]
}
