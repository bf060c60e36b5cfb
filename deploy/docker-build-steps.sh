#!/usr/bin/env bash
# Runs the build steps of deploy/Dockerfile on this machine, without a container engine, so that
# CI exercises the image's recipe: the builder stage's `cargo build` and the runtime stage's
# checks of the installed binary (`strata --version`, `strata csi --help` naming every flag the
# Helm chart passes, the node plugin's supervisor).
#
# It reads the Dockerfile rather than repeating it: each RUN line is run here as it stands, with
# the image's paths mapped back to the repository through the COPY lines (the builder's WORKDIR
# is the repository's root, its target/ is $CARGO_TARGET_DIR). The steps themselves live in
# deploy/image-steps.sh, called by both. A RUN line this script does not know how to run here
# fails it, so a new step cannot go untested.
#
#   deploy/docker-build-steps.sh [--check-only]   (--check-only: skip the build, check the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
check_only=false
[[ ${1:-} == --check-only ]] && check_only=true

# The Dockerfile's steps as shell commands for this machine, one a line: "build CMD", "check CMD"
# or "apt PKG...".
steps=$(
    TARGET="$target" python3 - deploy/Dockerfile <<'PY'
import os, re, shlex, sys

lines, cur = [], ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    lines.append((cur + line).strip())
    cur = ""

def fail(msg):
    sys.exit(f"docker-build-steps: deploy/Dockerfile: {msg}")

stage, workdir, paths, out = None, {}, {}, []
builder_rust = None
for l in lines:
    word, _, rest = l.partition(" ")
    word = word.upper()
    if word == "FROM":
        parts = rest.split()
        stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"stage{len(workdir)}"
        workdir[stage] = "/"
        m = re.match(r"rust:(\d+\.\d+)", parts[0])
        if m:
            builder_rust = m.group(1)
        if ":" not in parts[0] or parts[0].endswith(":latest"):
            fail(f"base image {parts[0]} is not pinned to a tag")
    elif word == "WORKDIR":
        workdir[stage] = rest.strip()
    elif word == "COPY":
        args = shlex.split(rest)
        src_stage = None
        if args[0].startswith("--from="):
            src_stage = args.pop(0)[len("--from="):]
        if len(args) != 2:
            fail(f"COPY with other than one source and one destination: {l}")
        src, dest = args
        if src == ".":
            continue
        if src_stage:
            base = workdir.get(src_stage)
            if base is None:
                fail(f"COPY from an unknown stage: {l}")
            rel = os.path.relpath(src, base)
            if rel.startswith(".."):
                fail(f"COPY of {src}, outside the builder's WORKDIR {base}")
            local = os.path.join(os.environ["TARGET"], rel[len("target/"):]) if rel.startswith("target/") else rel
        else:
            local = src
        paths[dest] = local
    elif word == "RUN":
        cmd = rest
        if "image-steps.sh" in cmd:
            for dest in sorted(paths, key=len, reverse=True):
                cmd = cmd.replace(dest, paths[dest])
            kind = "build" if " build" in cmd else "check"
            out.append(f"{kind} {cmd}")
        elif "apt-get install" in cmd:
            m = re.search(r"apt-get install((?:\s+\S+)*?)\s*(&&|$)", cmd)
            pkgs = [w for w in m.group(1).split() if not w.startswith("-")]
            out.append("apt " + " ".join(pkgs))
        else:
            fail(f"a RUN line docker-build-steps.sh cannot run here: {l}")
if builder_rust is None:
    fail("no rust:VERSION builder image")
out.insert(0, f"rust {builder_rust}")
print("\n".join(out))
PY
)

echo "$steps" | sed 's/^/docker-build-steps: step: /'
while read -r kind cmd; do
    case $kind in
    rust)
        # The builder image's Rust is the workspace's rust-version.
        want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
        [[ $cmd == "$want" ]] || { echo "docker-build-steps: the builder image has Rust $cmd, Cargo.toml wants $want" >&2; exit 1; }
        ;;
    apt)
        missing=()
        for p in $cmd; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
        if ((${#missing[@]})); then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
        ;;
    build)
        if $check_only; then echo "docker-build-steps: --check-only: not building"; else eval "$cmd"; fi
        ;;
    check) eval "$cmd" ;;
    esac
done <<<"$steps"
echo "docker-build-steps: the Dockerfile's steps passed"
