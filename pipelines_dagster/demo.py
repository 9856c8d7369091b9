"""The embedded default: a demo infrastructure-live under .demo/ and `dagster dev` in local mode on it.

    python -m pipelines_dagster.demo [--folder .demo] [--port 3000]

Creates (once) a bare "remote" and a working clone holding two plain Terraform units with null resources, the
null provider for offline `terraform init -plugin-dir`, and a DAGSTER_HOME; then runs `dagster dev` with the
sensors watching the remote. Push a branch to the remote and the pull-request sensor plans it; push to main and
the deploy-branch sensor applies it. A second start reuses everything; Ctrl-C stops what it started.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

UNIT = '''terraform {{
  backend "local" {{
    path = "{state}"
  }}
}}

resource "null_resource" "{name}" {{
  triggers = {{ size = "small" }}
}}
'''


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="demo", GIT_AUTHOR_EMAIL="demo@example.com",
               GIT_COMMITTER_NAME="demo", GIT_COMMITTER_EMAIL="demo@example.com")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def prepare(folder: Path) -> dict:
    """The demo's files (created once) and the environment `dagster dev` runs with."""
    folder = folder.resolve()
    remote, work, state = folder / "remote.git", folder / "live", folder / "state"
    plugins = folder / "plugins" / "registry.terraform.io" / "hashicorp" / "null" / "2.1.2" / "linux_amd64"
    provider = Path(sys.prefix) / "lib" / "terraform-provider-null_v2.1.2_x4"
    if not (plugins / provider.name).exists():
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copy2(provider, plugins / provider.name)
    if not remote.exists():
        work.mkdir(parents=True, exist_ok=True)
        state.mkdir(parents=True, exist_ok=True)
        _git(work, "init", "-q", "-b", "main")
        for unit in ("dev/us-east-1/network", "dev/us-east-1/app"):
            (work / unit).mkdir(parents=True, exist_ok=True)
            name = unit.rsplit("/", 1)[-1]
            (work / unit / "main.tf").write_text(UNIT.format(state=state / f"{unit.replace('/', '_')}.tfstate",
                                                             name=name))
        (work / ".pipelines.yml").write_text("deploy_branch: main\ndependencies:\n"
                                             "  dev/us-east-1/app: [dev/us-east-1/network]\n")
        (work / "README.md").write_text("# demo infrastructure-live\n")
        _git(work, "add", "-A")
        _git(work, "commit", "-q", "-m", "demo infrastructure")
        _git(folder, "clone", "-q", "--bare", str(work), str(remote))
        _git(work, "remote", "add", "origin", str(remote))
    home = folder / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return {"DAGSTER_HOME": str(home), "PIPELINES_REPO_URL": f"file://{remote}",
            "PIPELINES_TF_PLUGIN_DIR": str(folder / "plugins"), "PIPELINES_CACHE_DIR": str(folder / "cache"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / ".demo")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINES_GITHUB_REPO",)}  # local mode
    env.update(prepare(args.folder))
    env.setdefault("PIPELINES_UI_URL", f"http://127.0.0.1:{args.port}")  # run links; asset graph reloads
    print(f"demo infrastructure-live: {args.folder / 'live'} (remote {env['PIPELINES_REPO_URL']})\n"
          f"Dagster UI: http://127.0.0.1:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the clean-up below runs on SIGTERM too
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "dev", "-w",
                             str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(args.port)],
                            cwd=ROOT, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:  # dagster dev leaves children behind on SIGTERM: stop the whole process group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


if __name__ == "__main__":
    sys.exit(main())
