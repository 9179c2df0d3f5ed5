"""``edgec build PLAN.toml``: plans checked whole before any work, compiles run on an executor (serial, local
processes, Ray) with results identical whatever the worker count, a worker killed mid-run survived."""

import json
import os
import sys

import pytest
from click.testing import CliRunner

from edgec.cli import main
from edgec.errors import UsageError
from edgec.api.executor import LocalExecutor, make_executor
from edgec.plan import load_plan

TINY = os.path.join(os.path.dirname(__file__), "..", "examples", "models", "tiny_cnn.onnx")


def _plan(tmp_path, text: str) -> str:
    p = tmp_path / "plan.toml"
    p.write_text(text.replace("TINY", os.path.abspath(TINY)))
    return str(p)


def _build(tmp_path, plan: str, out, *args: str):
    """``edgec build PLAN -o OUT --json ARGS`` with a cache of its own; (exit code, summary)."""
    r = CliRunner().invoke(
        main, ["build", plan, "-o", str(out), "--json", *args], env={"EDGEC_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert "{" in r.output, r.output
    return r.exit_code, json.loads(r.output[r.output.index("{") :])


def test_every_problem_of_a_plan_is_reported_before_any_work(tmp_path):
    plan = _plan(
        tmp_path,
        """
extra = 1
[[compile]]
model = "missing.onnx"
targets = ["cpux", "openvino{bogus=1}"]
pipeline = "quantise{bits=4}"
verfy = true

[[compile]]
model = "TINY"
targets = ["cpu"]
tiers = ["1MB"]

[[compile]]
model = "TINY"
targets = "cpu"
""",
    )
    out = tmp_path / "out"
    with pytest.raises(UsageError) as e:
        load_plan(plan, str(out))
    msg = str(e.value)
    for want in (
        "8 problems",
        "unknown top-level key 'extra'",
        "unknown key 'verfy' (did you mean 'verify'?)",
        "missing.onnx' does not exist",
        "unknown target 'cpux'",
        "unknown option 'bogus'",
        "unknown pass 'quantise'",
        "give 'calib'",
        "both write",
    ):
        assert want in msg, want
    r = CliRunner().invoke(main, ["build", plan, "-o", str(out)])
    assert r.exit_code == 2 and "nothing was compiled" in r.output
    assert not out.exists()


def test_a_plan_that_is_not_toml_is_named(tmp_path):
    p = tmp_path / "plan.toml"
    p.write_text("[[compile]\nmodel = 1")
    with pytest.raises(Exception) as e:
        load_plan(str(p), str(tmp_path / "o"))
    assert "not valid TOML" in str(e.value)


def test_a_missing_plan_and_bad_input_shapes_are_named(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_plan(str(tmp_path / "none.toml"), str(tmp_path / "o"))
    plan = _plan(tmp_path, '[[compile]]\nmodel = "TINY"\ntargets = ["cpu"]\ninput_shapes = { image = "1xtwo" }\n')
    with pytest.raises(UsageError, match="input_shapes: .*dims must be integers"):
        load_plan(plan, str(tmp_path / "o"))


def test_executor_arguments_are_checked(monkeypatch):
    with pytest.raises(UsageError, match="--workers must be at least 1, not 0"):
        make_executor("local", 0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if edgec[ray] were not installed
    with pytest.raises(UsageError, match=r"pip install 'edgec\[ray\]'"):
        make_executor("ray", 1)


@pytest.mark.slow
def test_build_compiles_verifies_caches_and_summarizes(tmp_path):
    plan = _plan(
        tmp_path,
        """
[[compile]]
model = "TINY"
targets = ["cpu", "openvino"]
pipelines = ["", "quantize{bits=8}"]
""",
    )
    out = tmp_path / "out"
    code, s = _build(tmp_path, plan, out)
    assert code == 0
    assert s["ok"] and s["compiles"] == 4 and s["failed"] == 0
    assert [(x["pipeline"], x["target"]) for x in s["rows"]] == [
        ("", "cpu"),
        ("", "openvino"),
        ("quantize{bits=8}", "cpu"),
        ("quantize{bits=8}", "openvino"),
    ]
    assert all(x["verify"] == "pass" and not x["cached"] for x in s["rows"])
    assert (out / "tiny_cnn" / "none" / "cpu" / "manifest.json").exists()
    assert (out / "tiny_cnn" / "quantize_bits_8" / "openvino" / "manifest.json").exists()
    assert (out / "build.html").read_text().count("<tr") == 5
    _, again = _build(tmp_path, plan, out)
    assert all(x["cached"] for x in again["rows"])
    assert [x["files"] for x in again["rows"]] == [x["files"] for x in s["rows"]]


@pytest.mark.slow
def test_a_plan_entry_with_tiers_builds_every_tier(tmp_path, monkeypatch):
    """Tiers are tasks: the largest beside the plain compiles, the others in a second round. Serial and 2 local
    workers build the same bytes; an entry whose one tier fails is reported (naming the tier) and leaves no
    folder, while the other entries finish."""
    plan = _plan(
        tmp_path,
        """
[[compile]]
model = "TINY"
targets = ["cpu"]
calib = "random"
tiers = ["30KB", "15KB", "20KB"]

[[compile]]
model = "TINY"
name = "plain"
targets = ["openvino"]
""",
    )
    out = tmp_path / "out"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "sens1"))
    code, s = _build(tmp_path, plan, out)
    assert code == 0
    row = s["rows"][0]
    assert [t["tier"] for t in row["tiers"]] == ["30KB", "20KB", "15KB"] and row["verify"] == "3/3 tiers pass"
    assert (out / "tiny_cnn" / "cpu" / "tiers.json").exists()
    assert 'href="tiny_cnn/cpu/tier-30KB/report.html"' in (out / "build.html").read_text()

    calls = []

    class Counting(LocalExecutor):
        def run(self, fn, items, shared=None, on_done=None):
            calls.append([kind for kind, _ in items])
            return super().run(fn, items, shared, on_done)

    from edgec.plan import run_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "sens2"))
    with Counting(workers=2) as ex:
        two = run_plan(load_plan(plan, str(tmp_path / "two")), ex, use_cache=False)
    assert calls == [["tier", "job"], ["tier", "tier"]]
    assert [r["ok"] for r in two["rows"]] == [True, True]
    assert two["rows"][0]["tiers"] == row["tiers"]
    for t in row["tiers"]:
        a = json.loads((out / "tiny_cnn" / "cpu" / t["path"] / "manifest.json").read_text())["files"]
        b = json.loads((tmp_path / "two" / "tiny_cnn" / "cpu" / t["path"] / "manifest.json").read_text())["files"]
        assert a == b

    (tmp_path / "bad.toml").write_text(open(plan).read().replace('"20KB"]', '"20KB", "1B"]'))
    with LocalExecutor(workers=2) as ex:
        three = run_plan(load_plan(str(tmp_path / "bad.toml"), str(tmp_path / "three")), ex, use_cache=False)
    assert [r["ok"] for r in three["rows"]] == [False, True]
    assert three["rows"][0]["error"].startswith("tier 1B: ")
    assert not [str(p) for p in (tmp_path / "three" / "tiny_cnn").rglob("*")]  # no tier, no scratch folder


def test_build_exits_nonzero_listing_every_failed_compile(tmp_path):
    plan = _plan(
        tmp_path,
        """
[[compile]]
model = "TINY"
targets = ["cpu"]

[[compile]]
model = "TINY"
name = "wrong-shape"
targets = ["cpu", "openvino"]
input_shapes = { nonexistent = "1x2" }
""",
    )
    r = CliRunner().invoke(main, ["build", plan, "-o", str(tmp_path / "out"), "--no-cache"])
    assert r.exit_code == 1
    assert "1 of 3 compiles ok" in r.output
    assert r.output.count("FAILED wrong-shape") == 2


def _sensitivity(executor):
    """tiny_cnn's sensitivity table, its layers sharded on ``executor`` (None: serially)."""
    from edgec.calibration import load_calibration
    from edgec.build import load_model
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline
    from edgec.plugins.cleanup import DEFAULT_CLEANUP
    from edgec.plugins.mixed.sensitivity import analyse

    m = load_model(TINY)
    h = host()
    ctx = PassContext(
        calibration=load_calibration("random", m, seed=0),
        passes=h.passes.as_dict(),
        checks=h.checks.as_dict(),
        executor=executor,
    )
    PassManager(parse_pipeline(DEFAULT_CLEANUP, ctx.passes)).run(m, ctx)
    return analyse(m, ["quantize{bits=2}", "quantize{bits=8}"], ctx, samples=2, use_cache=False).table


def _item_pid(item, shared):
    return item * shared["k"], os.getpid()


def _die_once(item, shared):
    """Kills its own worker process the first time item 1 runs (a marker file remembers), else returns."""
    marker = os.path.join(shared["dir"], f"died-{item}")
    if item == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return item


def test_local_processes_return_results_in_order_with_shared_data_sent_once():
    with LocalExecutor(workers=2) as ex:
        res = ex.run(_item_pid, list(range(6)), shared={"k": 3})
    assert [r.value[0] for r in res] == [0, 3, 6, 9, 12, 15]
    assert all(r.ok and r.value[1] != os.getpid() for r in res)


def test_a_killed_local_worker_is_survived(tmp_path):
    with LocalExecutor(workers=2) as ex:
        res = ex.run(_die_once, [0, 1, 2, 3], shared={"dir": str(tmp_path)})
    assert [r.value for r in res] == [0, 1, 2, 3]
    assert res[1].attempts == 2
    assert (tmp_path / "died-1").exists()


def test_an_exception_is_the_items_result_not_retried():
    with LocalExecutor(workers=1) as ex:
        res = ex.run(_item_pid, [1, 2], shared=None)  # None["k"]: TypeError in the task
    assert [r.ok for r in res] == [False, False] and "TypeError" in res[0].error and res[0].attempts == 1


def test_unknown_executor_is_a_usage_error():
    with pytest.raises(UsageError, match="--executor 'spark'"):
        make_executor("spark")


@pytest.mark.slow
def test_ray_matches_serial_and_survives_a_killed_worker(tmp_path):
    """A local Ray of 2 workers: compiles byte-identical to the serial run's; a worker process killed mid-task is
    retried and the run completes."""
    pytest.importorskip("ray", reason="Ray is edgec[ray], which scripts/setup.sh installs")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plan = _plan(
        tmp_path,
        """
[[compile]]
model = "TINY"
targets = ["cpu", "openvino"]
pipeline = "quantize{bits=8}"
""",
    )
    serial = load_plan(plan, str(tmp_path / "serial"))
    parallel = load_plan(plan, str(tmp_path / "ray"))
    from edgec.plan import run_plan

    with LocalExecutor(1) as ex:
        a = run_plan(serial, ex, use_cache=False)
    with make_executor("ray", workers=2) as ex:
        b = run_plan(parallel, ex, use_cache=False)
        died = ex.run(_die_once, [0, 1, 2, 3], shared={"dir": str(tmp_path)})
        sharded = _sensitivity(ex)  # the saved model sent once through the object store, not as a path
    assert sharded == _sensitivity(None)
    assert [r["files"] for r in a["rows"]] == [r["files"] for r in b["rows"]]
    assert all(r["ok"] for r in b["rows"]) and b["executor"] == "ray"
    assert [r.value for r in died] == [0, 1, 2, 3] and (tmp_path / "died-1").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.full  # Ray's own start-up is most of its minute; CI keeps the local-cluster Ray tests
def test_a_running_ray_cluster_by_ray_address_and_by_ray_client(tmp_path, monkeypatch):
    """A Ray cluster started beforehand (`ray start --head`, as a user's would be): `--executor ray` joins it
    through RAY_ADDRESS, and `--executor ray://HOST:PORT` through Ray Client; both build what the serial run
    builds. Only this test's head is stopped (`ray stop` would stop every Ray on the machine)."""
    pytest.importorskip("ray", reason="Ray is edgec[ray], which scripts/setup.sh installs")
    import signal
    import subprocess
    import time

    from edgec.plan import run_plan

    plan = _plan(tmp_path, '[[compile]]\nmodel = "TINY"\ntargets = ["cpu"]\npipeline = "quantize{bits=8}"\n')
    with LocalExecutor(1) as ex:
        serial = run_plan(load_plan(plan, str(tmp_path / "serial")), ex, use_cache=False)
    gcs, client = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs)]
        + ["--ray-client-server-port", str(client), "--include-dashboard", "false", "--disable-usage-stats"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        runs = {}
        for spec in ("ray", f"ray://127.0.0.1:{client}"):
            if spec == "ray":
                monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{gcs}")
            else:
                monkeypatch.delenv("RAY_ADDRESS")
            for _ in range(60):  # the head takes a few seconds to listen
                try:
                    ex = make_executor(spec)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(1)
            else:
                pytest.fail(f"could not join the Ray head at {spec}")
            with ex:
                assert ex.describe()["address"] == (f"127.0.0.1:{gcs}" if spec == "ray" else spec)
                assert ex.workers == 2  # the cluster's CPUs
                runs[spec] = run_plan(load_plan(plan, str(tmp_path / f"out{len(runs)}")), ex, use_cache=False)
        for spec, summary in runs.items():
            assert [r["files"] for r in summary["rows"]] == [r["files"] for r in serial["rows"]], spec
            assert all(r["ok"] for r in summary["rows"]) and summary["address"] != "local"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
