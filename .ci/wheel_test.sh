#!/usr/bin/env bash
# The package as a user gets it: build the wheel and sdist, check them, install the wheel into a fresh venv
# OUTSIDE the repository and use it from another folder (demo, scan on a testbed, `init` + pytest through the
# installed plugin).  Prints the time of each step.  Usage: .ci/wheel_test.sh [PYTHON]  (default .venv/bin/python,
# which needs the `release` extra: build, twine).
set -euo pipefail
PY=${1:-}
# an absolute path to the interpreter (no symlink resolution: a venv's python must stay the venv's), because the
# steps below run from other folders; a relative PYTHON is taken relative to where the script was called from
if [ -n "$PY" ] && [ "${PY#/}" = "$PY" ]; then PY="$PWD/$PY"; fi
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
WORK=$(mktemp -d /tmp/causalinterp-wheel.XXXXXX)
START=$SECONDS
step() { echo "wheel_test: [$((SECONDS - START)) s] $*"; }
trap 'rm -rf "$WORK"; echo "wheel_test: [$((SECONDS - START)) s] finished"' EXIT

step "build wheel and sdist"
"$PY" -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
"$PY" -m twine check --strict "$WORK"/dist/*
WHEEL=$(ls "$WORK"/dist/causalinterp-*.whl)
# The package data a user needs must be inside the wheel (a checkout hides its absence).
for f in causalinterp/examples/hypotheses/hyp_induction.yaml causalinterp/testbeds/data/induction/model.safetensors \
         causalinterp/_version.py; do
    "$PY" -c "import sys, zipfile; sys.exit(0 if '$f' in zipfile.ZipFile('$WHEEL').namelist() else 1)" \
        || { echo "wheel_test: $f is missing from $(basename "$WHEEL")"; exit 1; }
done

step "fresh venv outside the repository; CPU torch first, then the wheel"
python3 -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q -c "$REPO/.ci/constraints.txt" torch==2.13.0
"$V/python" -m pip install -q -c "$REPO/.ci/constraints.txt" "$WHEEL" pytest
"$V/python" -c "import causalinterp" || { echo "wheel_test: the wheel did not install"; exit 1; }

mkdir "$WORK/user" && cd "$WORK/user"   # nowhere near the checkout
step "imports come from the installed wheel, not the checkout"
"$V/python" - "$REPO" <<'PY'
import sys, causalinterp
from pathlib import Path
where = Path(causalinterp.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"imported from the checkout: {where}"
assert "site-packages" in where.parts, where
print("causalinterp", causalinterp.__version__, "from", where.parent)
PY
VERSION=$("$V/causalinterp" --version)
[ "$VERSION" = "causalinterp $("$PY" -c 'import sys; sys.path.insert(0, "'"$REPO"'"); from causalinterp._version import __version__; print(__version__)')" ] \
    || { echo "wheel_test: causalinterp --version printed '$VERSION'"; exit 1; }

step "causalinterp demo"
"$V/causalinterp" demo --out demo --no-progress > demo.log 2>&1 || { cat demo.log; exit 1; }
tail -8 demo.log
test -s demo/index.html && test -s demo/results.json

step "causalinterp scan on a testbed"
"$V/causalinterp" scan --task induction --model testbed:induction --sites head_out --layers 1 --positions end \
    --intervention noise --n 24 --n-resamples 999 --out scan --no-progress > scan.log 2>&1 || { cat scan.log; exit 1; }
tail -3 scan.log
test -s scan/results.json

step "causalinterp init, then pytest on it through the installed plugin"
"$V/causalinterp" init mine --model testbed:induction
rc=0; "$V/python" -m pytest mine -q -p no:cacheprovider -rA > pytest.log 2>&1 || rc=$?
tail -8 pytest.log
# 0 = every test passed or was null/inconclusive; 1 = a refuted claim (an honest verdict); anything else is broken
[ "$rc" -le 1 ] || { cat pytest.log; echo "wheel_test: pytest exited $rc"; exit 1; }
grep -Eq "SUPPORTED +the patch reaches the model \(setup check\) +recovery 1 " pytest.log \
    || { echo "wheel_test: the plugin did not run the scaffold's YAML hypotheses"; exit 1; }
grep -q "last-layer heads move the answer" pytest.log \
    || { echo "wheel_test: the plugin did not run the scaffold's Python hypothesis"; exit 1; }

step "done"
