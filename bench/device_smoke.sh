#!/usr/bin/env bash
# The GPU smoke test (bench/gpu_smoke.sh) on a lent GPU machine, whose python3 (3.12, torch 2.11) lacks Ray,
# diffusers, torch-pruning, clean-fid and pydantic and cannot fetch anything: the missing packages travel as
# wheels in the working tree, at most 64 MiB a call (tree included). Two halves:
#
#   here   (this machine, .venv/bin/python unless PYTHON is set)
#          bench/device_smoke.sh here [--dir .device] [--limit-mib 60] [--offline WHEELDIR] [--tree-mib M]
#          downloads the cp312 manylinux wheels at the versions of constraints.txt (packages the machine lacks,
#          and a few it has at other versions: transformers, peft, regex), checks that every requirement of a
#          carried wheel is carried or on the machine (bench/device_packages.txt), builds the project's wheel,
#          and lays out two plans under --dir, each call's folder with manifest.json (sha256 of every wheel and
#          part) and with its size (+ the travelling tree) under --limit-mib:
#            split/callN  the exact wheels; those over the limit (Ray, 79 MB) cut into parts across calls;
#            one/call1    a single call: Ray's wheel repacked without ray/jars (Java workers) and the dashboard's
#                         web client, and the packages the machine already has left out.
#          Prints the device calls to make. --offline takes the wheels from WHEELDIR (no network, no build).
#   stage  (the device, every call but the last of a plan)
#          bench/device_smoke.sh stage CALLDIR
#          copies the call's pieces into the staging folder ($DEVICE_STAGE, default /tmp/contribshap-device),
#          checking each one's sha256; a warm machine keeps them for the next call.
#   there  (the device's last call; or here, for a dry run, with PYTHON=<a 3.12 interpreter>)
#          bench/device_smoke.sh there CALLDIR [--profile paper|tiny] [--settings ...] [--budget-s 540]
#                                       [--check-only]
#          stages CALLDIR, reassembles the wheels from the staged pieces (a missing piece: exit 3 with the
#          calls to make again), checks each wheel's sha256, installs them with `pip install --no-index
#          --no-deps --target`, puts the target on PYTHONPATH, imports ray, diffusers, torch_pruning, cleanfid,
#          pydantic and contribshap, runs the console script, then bench/gpu_smoke.sh once per setting (each
#          with its own JSON, within what is left of --budget-s). Writes under $OUT (default: a new temporary
#          folder): device_smoke.log, device_smoke.json (versions, stage timings, per-setting results and,
#          with the paper profile, each shipped config's cost extrapolated from them) and
#          gpu_smoke-<setting>.json. --check-only stops after the sha256 check.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    here) PY="${PYTHON:-.venv/bin/python}" ;;
    stage | there) PY="${PYTHON:-python3}" ;;
    *)
        echo "usage: bench/device_smoke.sh here|stage|there ... (see the header of bench/device_smoke.sh)" >&2
        exit 2
        ;;
esac
exec "$PY" - "$@" <<'PY'
import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path.cwd()
MIB = 2**20
# Missing on the machine (or there at a version older than a carried wheel needs): always carried.
MISSING = ["ray", "diffusers", "torch-pruning", "clean-fid", "pydantic", "pydantic-core", "annotated-types",
           "typing-inspection", "typing-extensions", "jsonschema", "jsonschema-specifications", "referencing",
           "rpds-py", "attrs", "importlib-metadata", "lazy-importer", "zipp"]
# On the machine at other versions than the pins (transformers 5.17 there): carried by the split plan only.
OVERRIDES = ["transformers", "peft", "regex"]
# Left out of Ray's wheel in the one-call plan: the Java workers' jar and the dashboard's web client.
SLIM_DROP = ("ray/jars/", "ray/dashboard/client/build/")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def die(message: str, code: int = 2) -> None:
    print(f"device_smoke: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_name(path: Path) -> str:
    return norm(path.name.split("-")[0])


# ------------------------------------------------------------------------------------------------ here
def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            found[norm(name)] = version.strip()
    return found


def requirements(path: Path) -> list[str]:
    """Names the wheel requires on Linux x86_64 CPython 3.12 (no extras)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(path) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = archive.read(meta).decode()
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    names = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                names.append(norm(req.name))
    return names


def download(names: list[str], dest: Path) -> None:
    versions = pins()
    unpinned = [n for n in names if norm(n) not in versions]
    if unpinned:
        die(f"no pin for {unpinned} in constraints.txt; pin them there")
    wanted = [f"{n}=={versions[norm(n)]}" for n in names]
    have = {wheel_name(p): p for p in dest.glob("*.whl")}
    todo = [w for w, n in zip(wanted, names, strict=True)
            if norm(n) not in have or f"-{versions[norm(n)]}-" not in have[norm(n)].name]
    if todo:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
        for plat in PLATFORMS:
            cmd += ["--platform", plat]
        print(f"downloading {len(todo)} wheels ...", flush=True)
        subprocess.run(cmd + todo, check=True)


def build_project(dest: Path) -> Path:
    for old in dest.glob("contribshap-*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", ".",
                    "-w", str(dest)], check=True, cwd=ROOT)
    return next(dest.glob("contribshap-*.whl"))


def check_closure(wheels: list[Path]) -> list[str]:
    device = {norm(line) for line in (ROOT / "bench" / "device_packages.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    carried = {wheel_name(w) for w in wheels}
    problems = []
    for wheel in wheels:
        for name in requirements(wheel):
            if name not in carried and name not in device and name not in {"torch", "torchvision"}:
                problems.append(f"{wheel.name} needs {name}, which is neither carried nor on the machine")
    return problems


def slim(source: Path, dest: Path) -> Path:
    """Ray's wheel without SLIM_DROP (RECORD rewritten to match)."""
    out = dest / source.name
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as dst:
        for info in src.infolist():
            if info.filename.startswith(SLIM_DROP):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if not line.startswith(SLIM_DROP)).encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return out


def tree_bytes() -> int:
    """Bytes of the working tree that travel with every call (tracked + untracked-not-ignored files)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True,
                                check=True, cwd=ROOT).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())


def lay_out(plan: str, wheels: list[Path], base: Path, budget: int, max_calls: int) -> list[Path]:
    """Cut wheels over ``budget`` into parts, pack pieces first-fit-decreasing into calls of ``budget`` bytes
    (a manifest of ~1 KiB a wheel is kept aside), write ``base/callN/`` + manifest.json. Returns the call dirs."""
    budget -= 64 * 1024
    if budget <= 0:
        die("the limit leaves no room for wheels next to the working tree")
    shutil.rmtree(base, ignore_errors=True)
    pieces = []  # (size, wheel, index, offset)
    for wheel in wheels:
        size = wheel.stat().st_size
        n_parts = max(1, -(-size // budget))
        step = -(-size // n_parts)
        for index in range(n_parts):
            pieces.append((min(step, size - index * step), wheel, index if n_parts > 1 else None, index * step))
    calls: list[list] = []
    for piece in sorted(pieces, key=lambda p: (-p[0], p[1].name, p[2] or 0)):
        target = next((c for c in calls if sum(p[0] for p in c) + piece[0] <= budget), None)
        if target is None:
            calls.append(target := [])
        target.append(piece)
    if len(calls) > max_calls:
        return []
    manifest = {"plan": plan, "calls": len(calls), "wheels": {}}
    for wheel in wheels:
        manifest["wheels"][wheel.name] = {"sha256": sha256(wheel), "size": wheel.stat().st_size, "parts": []}
    dirs = []
    for number, call in enumerate(calls, start=1):
        folder = base / f"call{number}"
        folder.mkdir(parents=True)
        dirs.append(folder)
        for size, wheel, index, offset in call:
            name = wheel.name if index is None else f"{wheel.name}.part{index + 1:02d}"
            with wheel.open("rb") as src:
                src.seek(offset)
                (folder / name).write_bytes(src.read(size))
            manifest["wheels"][wheel.name]["parts"].append(
                {"name": name, "call": number, "index": index or 0, "size": size, "sha256": sha256(folder / name)})
    for entry in manifest["wheels"].values():
        entry["parts"].sort(key=lambda p: p["index"])
    manifest["id"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
    for folder in dirs:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dirs


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def here(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/device_smoke.sh here")
    parser.add_argument("--dir", default=".device", help="ignored folder for the wheels and the plans")
    parser.add_argument("--limit-mib", type=float, default=float(os.environ.get("DEVICE_LIMIT_MIB", 60)),
                        help="what one call may carry, the travelling tree included (the tool's limit: 64)")
    parser.add_argument("--offline", default=None, help="take the wheels from this folder: no download, no build")
    parser.add_argument("--tree-mib", type=float, default=None,
                        help="size of the working tree that travels with each call (default: measured with git)")
    args = parser.parse_args(argv)
    base = (ROOT / args.dir).resolve()
    if args.offline:
        source = Path(args.offline).resolve()
        wheels = sorted(source.glob("*.whl"))
        if not wheels:
            die(f"--offline {source} holds no .whl file")
    else:
        if subprocess.run(["git", "check-ignore", "-q", str(base)], cwd=ROOT).returncode != 0:
            die(f"{args.dir} is not ignored by git; add it to .gitignore so that only `carry` moves it")
        source = base / "wheels"
        source.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        download(MISSING + OVERRIDES, source)
        project = build_project(source)
        print(f"wheels ready in {time.perf_counter() - start:.1f} s (project: {project.name})", flush=True)
        wanted = {norm(n) for n in MISSING + OVERRIDES} | {"contribshap"}
        wheels = sorted(w for w in source.glob("*.whl") if wheel_name(w) in wanted)
        problems = check_closure(wheels)
        if problems:
            die("; ".join(problems) + " (add the package to MISSING in bench/device_smoke.sh)", 1)
    tree = tree_bytes() if args.tree_mib is None else int(args.tree_mib * MIB)
    budget = int(args.limit_mib * MIB) - tree
    print(f"\ntravelling tree {tree / MIB:.2f} MiB; each call may carry {budget / MIB:.2f} MiB more "
          f"(limit {args.limit_mib} MiB)")
    print(f"{'wheel':72} {'MiB':>7}")
    for wheel in wheels:
        print(f"{wheel.name:72} {wheel.stat().st_size / MIB:7.2f}")

    split_dirs = lay_out("split", wheels, base / "split", budget, max_calls=8)
    one_dirs = []
    rays = [w for w in wheels if wheel_name(w) == "ray"]
    if rays:
        work = base / "slim"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        thin = slim(rays[0], work)
        print(f"{thin.name} without {', '.join(SLIM_DROP)}: {thin.stat().st_size / MIB:.2f} MiB")
        kept = [thin] + [w for w in wheels if wheel_name(w) not in {"ray", *map(norm, OVERRIDES)}]
        one_dirs = lay_out("one", kept, base / "one", budget, max_calls=1)

    def rel(path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    def show(label: str, dirs: list[Path]) -> None:
        print(f"\n{label}")
        for number, folder in enumerate(dirs, start=1):
            last = number == len(dirs)
            verb = "there" if last else "stage"
            timeout = 600 if last else 120
            note = "" if number == 1 else "   # at once: a machine stays warm 30 s after a call"
            command = f"bash bench/device_smoke.sh {verb} {rel(folder)}"
            print(f"  call {number}: {dir_bytes(folder) / MIB:6.2f} MiB carried + {tree / MIB:.2f} MiB tree{note}")
            print(f"    run(command={json.dumps(command)}, carry={json.dumps([rel(folder)])}, timeout_s={timeout})")

    if split_dirs:
        show(f"plan split ({len(split_dirs)} calls, the exact wheels):", split_dirs)
    else:
        print("\nplan split: does not fit in 8 calls")
    if one_dirs:
        show("plan one (one call, no warm machine needed; Ray slimmed, the machine's transformers/peft/regex):", one_dirs)
    elif rays:
        print("\nplan one: does not fit in one call")
    print("\nIf the last call of plan split exits 3 (its staged parts are gone: the machine went cold between calls),"
          "\nmake the calls of plan split again back to back, or the one call of plan one.")


# ------------------------------------------------------------------------------------------ stage / there
def load_manifest(call_dir: Path) -> dict:
    path = call_dir / "manifest.json"
    if not path.is_file():
        die(f"{call_dir} has no manifest.json; name the call folder in `carry` (bench/device_smoke.sh here lays it out)")
    return json.loads(path.read_text())


def stage_dir(manifest: dict) -> Path:
    return Path(os.environ.get("DEVICE_STAGE", "/tmp/contribshap-device")) / f"{manifest['plan']}-{manifest['id']}"


def stage(call_dir: Path) -> tuple[dict, Path]:
    manifest = load_manifest(call_dir)
    folder = stage_dir(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in manifest["wheels"].values():
        for part in entry["parts"]:
            src = call_dir / part["name"]
            if not src.exists():
                continue
            if sha256(src) != part["sha256"]:
                die(f"{src} does not match its sha256 in the manifest: lay the plan out again (here) and carry it anew", 1)
            shutil.copyfile(src, folder / part["name"])
    staged = sum(1 for e in manifest["wheels"].values() for p in e["parts"] if (folder / p["name"]).exists())
    total = sum(len(e["parts"]) for e in manifest["wheels"].values())
    print(f"staged {call_dir.name} of plan {manifest['plan']} into {folder}: {staged}/{total} pieces present", flush=True)
    return manifest, folder


def assemble(manifest: dict, folder: Path, call_dir: Path) -> list[Path]:
    missing = sorted({p["call"] for e in manifest["wheels"].values() for p in e["parts"]
                      if not (folder / p["name"]).exists()})
    if missing:
        calls = ", ".join(f"call {c} (bench/device_smoke.sh stage {call_dir.parent}/call{c})" for c in missing)
        die(f"pieces of {calls} are not on this machine: it went cold between the calls or they were not made. "
            f"Make {calls} again and this call right after it, or use the one-call plan", 3)
    out = folder / "wheels"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    wheels = []
    for name, entry in manifest["wheels"].items():
        target = out / name
        with target.open("wb") as dst:
            for part in entry["parts"]:
                with (folder / part["name"]).open("rb") as src:
                    shutil.copyfileobj(src, dst, MIB)
        if sha256(target) != entry["sha256"]:
            die(f"{name} reassembled does not match its sha256: a staged piece is stale; "
                f"remove {folder} and make the plan's calls again", 1)
        wheels.append(target)
    return wheels


def extrapolate(name: str, measured: dict) -> dict:
    """The shipped config's coalition cost from the smoke's per-unit rates, linearly: fine-tune steps x s per
    step + images x DDIM steps x s per image-step + property seconds per image x images + the per-coalition
    overhead measured (loading, setup); GPU-hours for ``design.budget`` coalitions."""
    import yaml

    game = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    cfg, budget = game["game"], game["design"]["budget"]
    steps, images, ddim = cfg["finetune"]["steps"], cfg["sampling"]["n_images"], cfg["sampling"]["steps"]
    overhead = max(0.0, measured["coalition_s"] - measured["finetune_s"] - measured["sample_s"] - measured["eval_s"])
    parts = {"finetune_s": steps * measured["s_per_finetune_step"],
             "sample_s": images * ddim * measured["s_per_image_step"],
             "eval_s": measured["eval_s"] / measured["n_images"] * images,
             "overhead_s": overhead}
    coalition = sum(parts.values())
    return {"config": f"configs/{name}.yaml", "finetune_steps": steps, "n_images": images, "ddim_steps": ddim,
            **{k: round(v, 2) for k, v in parts.items()}, "coalition_s": round(coalition, 1),
            "coalitions": budget, "gpu_hours": round(budget * coalition / 3600, 2)}


class Log:
    def __init__(self, path: Path) -> None:
        self.handle = path.open("a")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.handle.write(line + "\n")
        self.handle.flush()


def there(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/device_smoke.sh there")
    parser.add_argument("call_dir")
    parser.add_argument("--profile", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--settings", default="cifar20,celebahq,artbench")
    parser.add_argument("--budget-s", type=float, default=540.0, help="seconds for the whole half (the call's limit is 600)")
    parser.add_argument("--check-only", action="store_true", help="stop after the sha256 check of the wheels")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    call_dir = Path(args.call_dir)
    if not call_dir.is_dir():
        die(f"{call_dir} is not a folder; name it in `carry` (bench/device_smoke.sh here lays it out)")
    manifest, folder = stage(call_dir)
    wheels = assemble(manifest, folder, call_dir)
    print(f"{len(wheels)} wheels reassembled and checked (sha256) in {time.perf_counter() - start:.1f} s", flush=True)
    if args.check_only:
        return
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="device_smoke-"))
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "device_smoke.log")
    doc = {"plan": manifest["plan"], "manifest": manifest["id"], "python": sys.version.split()[0],
           "executable": sys.executable, "host": platform.node(), "cpus": os.cpu_count(), "profile": args.profile,
           "stages_s": {}, "settings": {}}
    doc["stages_s"]["stage_assemble"] = round(time.perf_counter() - start, 1)

    def save() -> None:
        doc["total_s"] = round(time.perf_counter() - start, 1)
        (out / "device_smoke.json").write_text(json.dumps(doc, indent=1))

    # install: pip --target, then everything below runs with the target first on PYTHONPATH
    t = time.perf_counter()
    site = folder / "site"
    shutil.rmtree(site, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--disable-pip-version-check", "--target", str(site), *map(str, wheels)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        log(done.stdout + done.stderr)
        save()
        die(f"pip install --target {site} failed (exit {done.returncode}); see {out / 'device_smoke.log'}", 1)
    doc["stages_s"]["install"] = round(time.perf_counter() - t, 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    log(f"installed {len(wheels)} wheels into {site} in {doc['stages_s']['install']} s")

    # imports: the carried packages and the machine's own, with versions and where each came from
    t = time.perf_counter()
    probe = ("import importlib, json, sys\n"
             "out = {}\n"
             "for name in ['ray', 'diffusers', 'torch_pruning', 'cleanfid', 'pydantic', 'contribshap.pipeline.cli',\n"
             "             'contribshap.workers.game', 'torch', 'torchvision', 'transformers', 'peft', 'accelerate',\n"
             "             'huggingface_hub', 'numpy', 'scipy', 'pyarrow', 'safetensors', 'typer']:\n"
             "    m = importlib.import_module(name)\n"
             "    out[name] = [getattr(m, '__version__', ''), (getattr(m, '__file__', '') or '')]\n"
             "import torch\n"
             "out['cuda'] = [torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, torch.version.cuda]\n"
             "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        log(done.stderr[-3000:])
        save()
        die("an import failed (above); the machine lacks a package the wheels need, or one is too old", 1)
    imports = json.loads(done.stdout.strip().splitlines()[-1])
    doc["imports"] = {k: {"version": v[0], "carried": str(site) in v[1]} for k, v in imports.items() if k != "cuda"}
    doc["gpu"], doc["cuda"] = imports["cuda"]
    script = site / "bin" / "contribshap"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        log(done.stdout + done.stderr[-3000:])
        save()
        die(f"{script} --help failed (exit {done.returncode})", 1)
    doc["stages_s"]["imports"] = round(time.perf_counter() - t, 1)
    for name, info in doc["imports"].items():
        log(f"  {name:26} {info['version']:14} {'carried' if info['carried'] else 'machine'}")
    log(f"imports + `contribshap --help` OK in {doc['stages_s']['imports']} s; GPU: {doc['gpu']}")
    save()

    # the smoke test, one setting at a time (each writes its JSON; what is left of the budget bounds each)
    for name in [s for s in args.settings.split(",") if s]:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 30:
            log(f"{name}: skipped, {left:.0f} s of the budget left")
            doc["settings"][name] = {"skipped": f"{left:.0f} s of the budget left"}
            save()
            continue
        t = time.perf_counter()
        json_out = out / f"gpu_smoke-{name}.json"
        cmd = ["bash", "bench/gpu_smoke.sh", "--profile", args.profile, "--device", args.device, "--settings", name,
               "--out", str(json_out)]
        log(f"$ {' '.join(cmd)}   (timeout {left:.0f} s)")
        # its own process group, so that a timeout also ends the CLI and the Ray processes it started
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            text, _ = proc.communicate(timeout=left)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    text, _ = proc.communicate(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    text = ""
        log(text.rstrip()[-6000:])
        entry = {"exit": code, "seconds": round(time.perf_counter() - t, 1)}
        if code == 0 and json_out.exists():
            result = json.loads(json_out.read_text())
            entry.update(result["settings"][name], torch=result["torch"], device=result["device"])
            if args.profile == "paper":
                entry["extrapolated"] = extrapolate(name, entry)
        doc["settings"][name] = entry
        save()
        log(f"{name}: exit {code} in {entry['seconds']} s")
        if "extrapolated" in entry:
            x = entry["extrapolated"]
            log(f"{name}: {x['config']} extrapolated: {x['coalition_s']} s / coalition (fine-tune {x['finetune_s']}, "
                f"sample {x['sample_s']}, property {x['eval_s']}, overhead {x['overhead_s']}), "
                f"{x['gpu_hours']} GPU-hours for {x['coalitions']} coalitions")
    failed = [n for n, e in doc["settings"].items() if e.get("exit") != 0]
    save()
    log(f"device_smoke: {len(doc['settings']) - len(failed)}/{len(doc['settings'])} settings OK, "
        f"total {doc['total_s']} s; wrote {out}")
    if failed:
        sys.exit(1)


mode, rest = sys.argv[1], sys.argv[2:]
if mode == "here":
    here(rest)
elif mode == "stage":
    if len(rest) != 1:
        die("usage: bench/device_smoke.sh stage CALLDIR")
    stage(Path(rest[0]))
else:
    there(rest)
PY
