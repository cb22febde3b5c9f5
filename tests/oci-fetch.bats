#!/usr/bin/env bats
# oci-fetch against a real docker-registry on loopback, with images built
# offline by scripts/mkoci and pushed by skopeo.

load helpers

setup_file() {
	fixture_registry "$BATS_FILE_TMPDIR"
	push "$FIX:index" test/index:latest --all
	push "$FIX:one" test/docker:latest --format v2s2
	push "$FIX:amd64" test/amd64:latest
}

teardown_file() {
	kill "$REG_PID" 2>/dev/null || true
}

setup() {
	cd "$T"
}

# manifest_digest REPO:TAG: the digest the registry gives for a reference.
manifest_digest() {
	curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
		"http://$REG/v2/${1%%:*}/manifests/${1#*:}" | tr -d '\r' |
		awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}

# fixture_digest REF: the manifest digest of a reference in the fixture layout.
fixture_digest() {
	jq -r --arg r "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' "$FIX/index.json"
}

@test "-h, -V and bad options" {
	run_split oci-fetch -h
	assert_success
	assert_output --partial "usage: oci-fetch"
	run_split oci-fetch -V
	assert_output --regexp '^oci-fetch \(vmstrap\) '
	run_split oci-fetch -x
	assert_refused 64 "unknown option '-x'"
	run_split oci-fetch -j 0 x
	assert_refused 64 "invalid -j '0'"
	run_split oci-fetch a b
	assert_refused 64 "too many operands"
}

@test "bad references are refused before anything is created" {
	for ref in 'Debian' 'a//b' 'a:' 'a@sha256:zz' ':x' 'x:-y' 'exa_mple.com/x'; do
		run_split oci-fetch "$ref"
		assert_refused 64 "invalid image reference"
		assert_one_line
	done
	run_split oci-fetch ''
	assert_refused 64 "empty image reference"
	[ ! -e oci-cache ]
}

@test "a registry port above 65535, or 0, is refused as a usage error before anything is created" {
	for reg in 127.0.0.1:70000 127.0.0.1:0 localhost:99999; do
		run_split oci-fetch "$reg/a/b:1"
		assert_refused 64 "^oci-fetch: invalid image reference '$reg/a/b:1': bad registry '$reg': its port is not from 1 to 65535$"
		assert_one_line
	done
	run_split oci-fetch --offline 127.0.0.1:70000/a/b:1
	assert_refused 64 "bad registry '127.0.0.1:70000': its port is not from 1 to 65535"
	assert_one_line
	[ ! -e oci-cache ]
}

@test "a sha512 digest is an unsupported algorithm, online and --offline, not an image missing from the cache" {
	d512=sha512:$(printf 'x' | sha512sum | cut -d' ' -f1)
	run_split oci-fetch -q "$REG/test/one@$d512"
	assert_refused 64 "^oci-fetch: invalid image reference '$REG/test/one@$d512': unsupported digest algorithm 'sha512' \(only sha256 is supported\)$"
	assert_one_line
	[ ! -e oci-cache ]
	# With a cache there, --offline says the same, and leaves it as it was.
	run_split oci-fetch -q "$REG/test/one"
	assert_success
	cp oci-cache/index.json index.before
	for flag in --offline ""; do
		run_split oci-fetch -q $flag "$REG/test/one:latest@$d512"
		assert_refused 64 "unsupported digest algorithm 'sha512'"
		assert_one_line
	done
	cmp oci-cache/index.json index.before
	assert_no_temp oci-cache
}

@test "an index.json entry with a negative or wrong size is refused --offline, and replaced online" {
	run_split oci-fetch -q "$REG/test/one"
	assert_success
	size=$(jq --arg r "$REG/test/one:latest" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .size' oci-cache/index.json)
	for bad in -1 $((size + 1)); do
		jq -c --argjson s "$bad" '.manifests[0].size = $s' oci-cache/index.json > i && mv i oci-cache/index.json
		cp oci-cache/index.json index.before
		run_split oci-fetch -q --offline "$REG/test/one"
		if [ "$bad" -lt 0 ]; then
			assert_refused 65 "^oci-fetch: $T/oci-cache/index.json: the entry for $REG/test/one:latest is not a valid descriptor: it has a negative size \(-1\)$"
		else
			assert_refused 65 "^oci-fetch: $T/oci-cache/index.json: the entry for $REG/test/one:latest says $bad bytes, and its manifest has $size$"
		fi
		assert_one_line
		cmp oci-cache/index.json index.before
		assert_no_temp oci-cache
		# Online, the broken entry is replaced by a fresh pull.
		run_split oci-fetch -q "$REG/test/one"
		assert_success
		[ "$(jq '.manifests[0].size' oci-cache/index.json)" -eq "$size" ]
		blobs_verify
	done
}

@test "a manifest with a negative layer size is refused, naming the layer" {
	m=$(skopeo inspect --raw --tls-verify=false "docker://$REG/test/one:latest" | jq -c '.layers[0].size = -1')
	layer=$(jq -r '.layers[0].digest' <<< "$m")
	curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
		--data-binary "$m" "http://$REG/v2/test/one/manifests/negative" > /dev/null ||
		skip "the registry does not take a manifest with a negative size"
	run_split oci-fetch -q "$REG/test/one:negative"
	assert_refused 65 "^oci-fetch: invalid manifest: a layer \($layer\) has a negative size \(-1\)$"
	assert_one_line
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
	[ -z "$(find oci-cache -name '*.partial')" ]
}

@test "a bad OCI_FETCH_TIMEOUT is a usage error" {
	for v in 0 x 2s 86401; do
		OCI_FETCH_TIMEOUT=$v run_split oci-fetch -q "$REG/test/one"
		assert_refused 64 "^oci-fetch: invalid OCI_FETCH_TIMEOUT '$v': expected a whole number from 1 to 86400$"
		assert_one_line
	done
	[ ! -e oci-cache ]
}

@test "no REF and no configuration is a usage error" {
	run_split oci-fetch
	assert_refused 64 "no image: give REF, or set config.image"
	[ ! -e oci-cache ]
}

@test "a single-layer OCI image lands in a valid OCI layout" {
	run_split oci-fetch "$REG/test/one"
	assert_success
	[ -z "$stderr" ]
	[ "$(jqo '.image | keys_unsorted | join(",")')" = "ref,registry,repository,tag,digest,mediaType,platform,layout,config,layers,fetched,reused,artifact" ]
	[ "$(jqo .image.ref)" = "$REG/test/one:latest" ]
	[ "$(jqo .image.registry)" = "$REG" ]
	[ "$(jqo .image.repository)" = test/one ]
	[ "$(jqo .image.tag)" = latest ]
	[ "$(jqo .image.digest)" = "$(manifest_digest test/one:latest)" ]
	[ "$(jqo .image.mediaType)" = application/vnd.oci.image.manifest.v1+json ]
	[ "$(jqo .image.layout)" = "$T/oci-cache" ]
	[ "$(jqo '.image.layers | length')" -eq 1 ]
	[ "$(jqo .image.reused)" -eq 0 ]
	total=$(jqo '[.image.layers[].size] | add')
	cfg=$(stat -c %s "oci-cache/blobs/sha256/$(jqo .image.config | cut -d: -f2)")
	[ "$(jqo .image.fetched)" -eq $((total + cfg)) ]
	[ "$(jq -r .imageLayoutVersion oci-cache/oci-layout)" = 1.0.0 ]
	blobs_verify
	layer=$(jqo '.image.layers[0].digest')
	run skopeo inspect "oci:oci-cache:$REG/test/one:latest"
	assert_success
	assert_output --partial "$layer"
	run umoci ls --layout oci-cache
	assert_output "$REG/test/one:latest"
	run umoci unpack --image "oci-cache:$REG/test/one:latest" bundle
	assert_success
	[ "$(cat bundle/rootfs/etc/hostname)" = one ]
	[ -z "$(find oci-cache -name '*.partial')" ]
}

@test "the image section's keys are the ones vmstrap(7) and oci-fetch(1) document" {
	run_split oci-fetch -q "$REG/test/one"
	assert_success
	code=$(jqo '.image | keys_unsorted | .[]')
	seven=$(awk '/^\.Ss image$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7")
	one=$(awk '/^\.It Li / {print $3}' "$VS_TOP/man/oci-fetch.1")
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; oci-fetch.1: $one"
	[ "$(jqo '.image.layers[0] | keys_unsorted | join(",")')" = "digest,size,mediaType" ]
}

@test "progress is drawn on a terminal only" {
	command -v script >/dev/null || fail "script(1) missing (bsdutils)"
	script -qec "oci-fetch $REG/test/multi >/dev/null" /dev/null > tty.out
	grep -q 'oci-fetch: pulling' tty.out
	grep -q '/s' tty.out
	rm -rf oci-cache
	run_split oci-fetch "$REG/test/multi"
	assert_success
	[ -z "$stderr" ]
}

@test "a multi-layer image: every layer, in order, verified" {
	run_split oci-fetch -q "$REG/test/multi"
	assert_success
	[ "$(jqo '.image.layers | length')" -eq 3 ]
	want=$(skopeo inspect --raw --tls-verify=false "docker://$REG/test/multi:latest" | jq -r '[.layers[].digest] | join(",")')
	[ "$(jqo '[.image.layers[].digest] | join(",")')" = "$want" ]
	[ "$(jqo '.image.layers[1].size')" -gt $((4 << 20)) ]
	blobs_verify
}

@test "an index resolves to the host's platform, or to -p's; an absent one lists those there are" {
	run_split oci-fetch -q "$REG/test/index"
	assert_success
	[ "$(jqo .image.platform)" = linux/amd64 ]
	[ "$(jqo .image.digest)" = "$(fixture_digest amd64)" ]
	run_split oci-fetch -q -p linux/arm64 "$REG/test/index"
	assert_success
	[ "$(jqo .image.platform)" = linux/arm64/v8 ]
	[ "$(jqo .image.digest)" = "$(fixture_digest arm64)" ]
	run_split oci-fetch -q -p linux/s390x "$REG/test/index"
	assert_refused 69 "has no image for linux/s390x; it has: linux/amd64, linux/arm64/v8"
	run_split oci-fetch -q -p linux "$REG/test/index"
	assert_refused 64 "invalid platform 'linux'"
}

@test "a Docker schema 2 image is kept as its OCI equivalent, with the same blobs" {
	run_split oci-fetch -q "$REG/test/docker"
	assert_success
	docker=$(skopeo inspect --raw --tls-verify=false "docker://$REG/test/docker:latest")
	[ "$(jq -r .mediaType <<< "$docker")" = application/vnd.docker.distribution.manifest.v2+json ]
	[ "$(jqo .image.mediaType)" = application/vnd.oci.image.manifest.v1+json ]
	[ "$(jqo .image.layers[0].mediaType)" = application/vnd.oci.image.layer.v1.tar+gzip ]
	[ "$(jqo .image.layers[0].digest)" = "$(jq -r .layers[0].digest <<< "$docker")" ]
	[ "$(jqo .image.config)" = "$(jq -r .config.digest <<< "$docker")" ]
	blobs_verify
	# The warm path knows it by the registry's digest.
	before=$(registry_requests)
	run_split oci-fetch -q "$REG/test/docker"
	[ "$(jqo .image.fetched)" -eq 0 ]
	[ "$(( $(registry_requests) - before ))" -eq 1 ]
	run skopeo inspect "oci:oci-cache:$REG/test/docker:latest"
	assert_success
}

@test "a reference by digest is checked against it" {
	d=$(manifest_digest test/one:latest)
	run_split oci-fetch -q "$REG/test/one@$d"
	assert_success
	[ "$(jqo .image.digest)" = "$d" ]
	[ "$(jqo .image.tag)" = null ]
	bad=sha256:0000000000000000000000000000000000000000000000000000000000000000
	run_split oci-fetch -q "$REG/test/one@$bad"
	assert_refused 69 "no image test/one:$bad"
}

@test "warm path: nothing is downloaded, with one request" {
	run_split oci-fetch -q "$REG/test/multi"
	assert_success
	total=$(jqo .image.fetched)
	before=$(registry_requests)
	run_split oci-fetch -q "$REG/test/multi"
	assert_success
	[ "$(jqo .image.fetched)" -eq 0 ]
	[ "$(jqo .image.reused)" -eq "$total" ]
	[ "$(( $(registry_requests) - before ))" -eq 1 ] ||
		fail "$(( $(registry_requests) - before )) requests"
}

@test "--offline resolves from the cache alone, and says when it cannot" {
	run_split oci-fetch -q "$REG/test/one"
	assert_success
	first=$output
	before=$(registry_requests)
	run_split oci-fetch --offline "$REG/test/one"
	assert_success
	[ "$(jqo .image.digest)" = "$(jq -r .image.digest <<< "$first")" ]
	[ "$(jqo .image.fetched)" -eq 0 ]
	[ "$(registry_requests)" -eq "$before" ]
	run_split oci-fetch --offline "$REG/test/multi"
	assert_refused 66 "is not in .*oci-cache \(fetch it without --offline first\)"
	rm -f oci-cache/blobs/sha256/"$(jq -r '.image.layers[0].digest' <<< "$first" | cut -d: -f2)"
	run_split oci-fetch --offline "$REG/test/one"
	assert_refused 66 "blobs of .* are missing"
}

@test "--offline checks the platform too" {
	run_split oci-fetch -q -p linux/arm64 "$REG/test/index"
	assert_success
	run_split oci-fetch --offline -p linux/arm64 "$REG/test/index"
	assert_success
	[ "$(jqo .image.platform)" = linux/arm64/v8 ]
	run_split oci-fetch --offline -p linux/amd64 "$REG/test/index"
	assert_refused 66 "the cache has .* for linux/arm64/v8, not for linux/amd64"
}

@test "a manifest that lists one layer twice" {
	m=$(skopeo inspect --raw --tls-verify=false "docker://$REG/test/one:latest" | jq -c '.layers += .layers')
	curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
		--data-binary "$m" "http://$REG/v2/test/one/manifests/twice" > /dev/null
	run_split timeout 30 oci-fetch -q "$REG/test/one:twice"
	assert_success
	[ "$(jqo '.image.layers | length')" -eq 2 ]
	blobs_verify
}

@test "an unknown tag or repository is EX_UNAVAILABLE with the registry's words" {
	run_split oci-fetch -q "$REG/test/one:nosuchtag"
	assert_refused 69 "no image test/one:nosuchtag: MANIFEST_UNKNOWN"
	assert_one_line
	run_split oci-fetch -q "$REG/test/nosuchrepo"
	assert_refused 69 "no image test/nosuchrepo:latest: (NAME|MANIFEST)_UNKNOWN"
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 0 ]
}

@test "an unreachable registry is EX_UNAVAILABLE" {
	run_split oci-fetch -q 127.0.0.1:9/test/one
	assert_refused 69 "127.0.0.1:9: .*(connect|Connection refused)"
	assert_one_line
}

@test "concurrent fetches into one cache all succeed and corrupt nothing" {
	for i in 1 2 3; do
		oci-fetch -q "$REG/test/multi" > "multi$i.json" 2> "multi$i.err" & pids+=($!)
	done
	oci-fetch -q "$REG/test/index" > index.json 2> index.err & pids+=($!)
	oci-fetch -q "$REG/test/one" > one.json 2> one.err & pids+=($!)
	for p in "${pids[@]}"; do
		wait "$p" || fail "a fetch failed: $(cat ./*.err)"
	done
	for i in 1 2 3; do
		[ "$(jq -r .image.digest "multi$i.json")" = "$(manifest_digest test/multi:latest)" ]
	done
	[ "$(jq '.manifests | length' oci-cache/index.json)" -eq 3 ]
	blobs_verify
	[ -z "$(find oci-cache -name '*.partial' -o -name '.*.tmp-*')" ]
}

@test "the image comes from the configuration's config.image; -C names the workspace" {
	mkdir ws
	cat > ws/slicer-mac.yaml <<-EOF
	config:
	  image: "$REG/test/one:latest"
	  host_groups:
	    - name: slicer
	      storage_size: 15G
	EOF
	run_split oci-fetch -q -C ws
	assert_success
	[ "$(jqo .image.ref)" = "$REG/test/one:latest" ]
	[ "$(jqo .image.layout)" = "$T/ws/oci-cache" ]
	run_split oci-fetch -q -C ws -g nosuch
	assert_refused 78 "no host group 'nosuch'"
	printf 'config:\n  image: [\n' > ws/slicer-mac.yaml
	run_split oci-fetch -q -C ws
	assert_refused 78 "slicer-mac.yaml:3:1:"
}
