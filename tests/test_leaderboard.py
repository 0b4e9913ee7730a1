"""The Hallucinations Leaderboard across process boundaries: two workers on one queue, a worker killed mid-evaluation,
the command line's exit codes and outputs, the lm-eval command on the shipped tasks, and the web page in a real browser."""
import json, os, signal, socket, subprocess, sys, time
from collections import Counter
from pathlib import Path

import pytest

from browser import chrome
from moe_nb.leaderboard.store import Store
from moe_nb.leaderboard.tasks import TASKS_DIR, OFFLINE_TASKS

QUICK = ["--tasks", "hl_halueval", "--limit", "5"]  # the cheapest real evaluation: one task, five documents


def lb(*args, store, check=False, timeout=600):
    "`moe-nb leaderboard ARGS --store STORE` in a fresh process."
    r = subprocess.run(["moe-nb", "leaderboard", *map(str, args), "--store", str(store)], capture_output=True, text=True, timeout=timeout)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r


def wait_for(pred, timeout=300, every=0.2, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try: v = pred()
        except Exception: v = None  # a page element not rendered yet
        if v: return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_two_workers_never_share_a_request(tmp_path):
    s = Store(tmp_path)
    ids = [s.submit("tiny-qwen2-random", "ada", revision=f"r{i}", exempt=["ada"]) for i in range(6)]
    cmd = ["moe-nb", "leaderboard", "worker", "--exit-when-empty", "--poll-s", "0.2", *QUICK, "--store", str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [s.get(i).status for i in ids] == ["FINISHED"] * 6
    ev = s.events()
    claims = Counter(e["request"] for e in ev if e["event"] == "claimed")
    assert claims == Counter({i: 1 for i in ids}), claims  # each request claimed exactly once
    finishers = {e["request"]: e["worker"] for e in ev if e["event"] == "finished"}
    claimers = {e["request"]: e["worker"] for e in ev if e["event"] == "claimed"}
    assert finishers == claimers  # finished by the worker that claimed it
    assert len(list((tmp_path/"results").rglob("results_*.json"))) == 6
    # both processes reported their own requests, and together all of them
    reported = [l.split()[1] for o, _ in outs for l in o.splitlines() if l.startswith("request ")]
    assert sorted(map(int, reported)) == ids


def test_killed_worker_is_recovered(tmp_path):
    s = Store(tmp_path)
    rid = s.submit("tiny-qwen2-random", "ada")
    # a long evaluation (every offline task, every document) with a short lease
    p = subprocess.Popen(["moe-nb", "leaderboard", "worker", "--once", "--lease-s", "3", "--store", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: s.get(rid).status == "RUNNING", what="the worker to claim the request")
        time.sleep(1.0)  # inside the evaluation; the lease has been renewed at least once by now
        assert p.poll() is None, "the worker finished before it could be killed"
        os.kill(p.pid, signal.SIGKILL); p.wait(timeout=30)
    finally:
        if p.poll() is None: p.kill()
    dead = s.get(rid)
    assert dead.status == "RUNNING" and dead.attempts == 1 and not list((tmp_path/"results").rglob("*.json"))
    time.sleep(3.5)  # the lease runs out
    r = lb("worker", "--once", *QUICK, store=tmp_path, check=True)
    assert f"request {rid} tiny-qwen2-random: FINISHED" in r.stdout, r.stdout
    done = s.get(rid)
    assert done.status == "FINISHED" and done.attempts == 2 and done.worker != dead.worker
    assert [e["event"] for e in s.events(rid)] == ["submitted", "claimed", "requeued", "claimed", "finished"]
    res = s.read_results(done)
    assert res["config"]["request_id"] == rid and set(res["results"]) == {"hl_halueval"}


def test_retry_limit_fails_a_request_that_kills_its_workers(tmp_path):
    s = Store(tmp_path)
    rid = s.submit("tiny-qwen2-random", "ada")
    p = subprocess.Popen(["moe-nb", "leaderboard", "worker", "--once", "--lease-s", "2", "--store", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: s.get(rid).status == "RUNNING", what="the claim")
    os.kill(p.pid, signal.SIGKILL); p.wait(timeout=30)
    time.sleep(2.5)
    r = lb("worker", "--once", "--max-attempts", "1", *QUICK, store=tmp_path)
    assert r.returncode == 0 and "no pending request" in r.stdout, r.stdout + r.stderr
    failed = s.get(rid)
    assert failed.status == "FAILED" and "stopped renewing its lease" in failed.error and "attempt 1 of 1" in failed.error


def test_cli(tmp_path):
    store = tmp_path/"store"
    r = lb("submit", "tiny-qwen2-random", "--user", "ada", store=store, check=True)
    assert r.stdout.strip() == "1"
    # refusals: exit 2, the reason, nothing written
    remote = tmp_path/"remote"; remote.mkdir()
    (remote/"config.json").write_text(json.dumps({"model_type": "qwen2", "auto_map": {"AutoModelForCausalLM": "evil.Model"}}))
    for args, why in [(["tiny-qwen2-random", "--user", "bob"], "already pending (request 1)"),
                      (["tiny-qwen2-random", "--user", "bob", "--precision", "int3"], "precision 'int3' is not known"),
                      (["tiny-olmoe", "--user", "bob", "--model-type", "distilled"], "model type 'distilled' is not known"),
                      (["bad name!", "--user", "bob"], "not well-formed"),
                      ([str(remote), "--user", "bob"], "needs remote code"),
                      (["tiny-olmoe-random", "--user", "ada", "--rate-limit", "1"], "the limit is 1")]:
        r = lb("submit", *args, store=store)
        assert r.returncode == 2 and why in r.stderr and r.stdout == "", (args, r.stderr)
    assert lb("submit", "tiny-olmoe-random", "--user", "ada", "--rate-limit", "1", "--exempt", "ada", store=store, check=True).stdout.strip() == "2"
    # a worker with a bad task list refuses before it claims anything
    r = lb("worker", "--once", "--tasks", "hl_nope", store=store)
    assert r.returncode == 2 and "not a leaderboard task" in r.stderr
    assert [q.status for q in Store(store).requests()] == ["PENDING", "PENDING"]
    r = lb("worker", "--exit-when-empty", *QUICK, store=store, check=True)
    assert r.stdout.count("FINISHED") == 2
    st = lb("status", store=store, check=True).stdout
    assert st.count("FINISHED") == 2 and "tiny-olmoe-random" in st
    out = tmp_path/"board.csv"
    lb("export", "--output", out, store=store, check=True)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("rank,model,type,precision,revision,average,hl_halueval,params,active_params,tokens_per_s") and len(lines) == 3
    rows = json.loads(lb("export", "--format", "json", store=store, check=True).stdout)
    olmoe = next(r for r in rows if r["model"] == "tiny-olmoe-random")
    assert olmoe["active_params"] < olmoe["params"] and [r["rank"] for r in rows] == [1, 2]
    # a results file in the HF leaderboards' layout, pinning the harness, task versions and few-shot settings
    f = next((store/"results"/"zoo"/"tiny-olmoe-random").glob("results_*.json"))
    res = json.loads(f.read_text())
    assert res["config"]["model_name"] == "tiny-olmoe-random" and res["config"]["model_dtype"] == "float32"
    assert res["config"]["harness_version"] and res["config"]["task_versions"] == {"hl_halueval": 1.0} and res["config"]["num_fewshot"] == {"hl_halueval": 0}
    assert set(res["results"]["hl_halueval"]) >= {"acc", "acc_norm"}


def test_worker_fails_with_the_reason(tmp_path):
    bad = tmp_path/"pickled"; bad.mkdir()
    (bad/"config.json").write_text(json.dumps({"model_type": "qwen2"})); (bad/"pytorch_model.bin").write_bytes(b"not a pickle")
    s = Store(tmp_path/"store"); rid = s.submit(str(bad), "ada", check=False)  # an admin queued it without checks
    r = lb("worker", "--once", *QUICK, store=tmp_path/"store")
    assert r.returncode == 1 and "FAILED" in r.stdout and "pickles" in r.stdout
    assert s.get(rid).status == "FAILED" and "never loads" in s.get(rid).error


def test_shipped_tasks_run_under_the_lm_eval_command(tmp_path):
    "The task folder in the installed package works with lm-eval's own command line (through moe-nb lm-eval), on its default device."
    r = subprocess.run(["moe-nb", "lm-eval", "run", "--model", "moe_nb", "--model_args", "pretrained=tiny-qwen2-random",
                        "--tasks", "hl_nq_swap,hl_closedbook_qa", "--include_path", str(TASKS_DIR), "--limit", "5",
                        "--output_path", str(tmp_path/"out")], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(next((tmp_path/"out").rglob("results_*.json")).read_text())
    assert set(res["results"]) == {"hl_nq_swap", "hl_closedbook_qa"} and res["versions"]["hl_nq_swap"] == 1.0


def test_real_task_yamls_are_valid():
    "The real tasks' YAMLs load as lm-eval configs (their data is not here; `resolve_tasks` refuses them with the names)."
    from lm_eval.tasks import TaskManager
    tm = TaskManager(include_path=[str(TASKS_DIR/"real")], include_defaults=False)
    from moe_nb.leaderboard.tasks import REAL_YAML, resolve_tasks
    assert set(REAL_YAML) <= set(tm.all_tasks)
    from lm_eval.tasks._yaml_loader import load_yaml as load_yaml_config  # lm-eval's own reader, !function included
    from lm_eval.api.task import TaskConfig
    for name in REAL_YAML:
        cfg = TaskConfig(**load_yaml_config(str(TASKS_DIR/"real"/f"{name}.yaml")))  # the !function loaders resolve too
        assert cfg.dataset_path and cfg.output_type in ("multiple_choice", "generate_until"), name
        if "process_docs" in REAL_YAML[name][3][0]: assert callable(cfg.process_docs), name
    with pytest.raises(ValueError, match=r"halueval_qa \(pminervini/HaluEval/qa\)"):
        resolve_tasks(["halueval_qa"])


def test_package_ships_the_tasks(tmp_path):
    "A wheel holds the leaderboard's task files and every subpackage (not only an editable install)."
    import zipfile
    root = Path(__file__).parents[1]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("moe_nb-*.whl"))).namelist())
    for n in OFFLINE_TASKS: assert {f"moe_nb/leaderboard/task_data/{n}.yaml", f"moe_nb/leaderboard/task_data/{n}.jsonl"} <= names, n
    assert {"moe_nb/leaderboard/task_data/_hl_data.py", "moe_nb/leaderboard/task_data/manifest.json",
            "moe_nb/leaderboard/task_data/real/hl_fever.yaml", "moe_nb/select_moe/model.py", "moe_nb/leaderboard/worker.py"} <= names


def free_port() -> int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_web_page_in_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    d = chrome()
    s = Store(tmp_path)
    s.submit("tiny-qwen2-random", "ada"); s.submit("tiny-olmoe-random", "ada", model_type="merged")
    from moe_nb.leaderboard.worker import Worker
    Worker(s, ["hl_memotrap"], limit=10).run(exit_when_empty=True)  # the two untrained models score differently here
    port = free_port()
    srv = subprocess.Popen(["moe-nb", "leaderboard", "serve", "--port", str(port), "--store", str(tmp_path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1): return True
            except OSError: return srv.poll() is not None
        wait_for(up, timeout=120, what="the server")
        assert srv.poll() is None, srv.stderr.read()
        d.set_page_load_timeout(60); d.get(f"http://127.0.0.1:{port}/")
        table = lambda: d.find_element(By.ID, "leaderboard-table").text
        wait_for(lambda: "tiny-olmoe-random" in table() and "tiny-qwen2-random" in table(), timeout=60, what="the ranked rows")
        assert "hl_memotrap" in table() and "active_params" in table()
        # sortable: the average column's menu sorts ascending, which reverses the ranked order
        order = lambda: [l for l in table().splitlines() if l.startswith("tiny-")]
        ranked = order(); assert len(ranked) == 2, ranked
        head = next(h for h in d.find_elements(By.CSS_SELECTOR, "#leaderboard-table thead th") if h.text.strip() == "average")
        d.execute_script("arguments[0].click()", head.find_element(By.CSS_SELECTOR, "button"))
        asc = wait_for(lambda: [b for b in d.find_elements(By.CSS_SELECTOR, "button") if b.text == "Sort ascending"], timeout=30, what="the sort menu")
        d.execute_script("arguments[0].click()", asc[0])
        wait_for(lambda: order() == ranked[::-1], timeout=30, what="the table sorted by average, ascending")
        # the search box filters the table
        d.find_element(By.CSS_SELECTOR, "#search textarea, #search input").send_keys("olmoe")
        wait_for(lambda: "tiny-qwen2-random" not in table(), timeout=30, what="the search to filter")
        # submit a model through the form and see it in the queue
        d.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Submit')]").click()
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#submit-model textarea, #submit-model input"), timeout=30, what="the form")
        d.find_element(By.CSS_SELECTOR, "#submit-model textarea, #submit-model input").send_keys("tiny-gpt_oss-random")
        d.find_element(By.CSS_SELECTOR, "#submit-user textarea, #submit-user input").send_keys("selenium")
        d.find_element(By.ID, "submit-button").click()
        wait_for(lambda: "Submitted" in d.find_element(By.ID, "submit-answer").text, timeout=60, what="the submission's answer")
        d.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Queue')]").click()
        wait_for(lambda: "tiny-gpt_oss-random" in d.find_element(By.ID, "queue-pending").text, timeout=60, what="the request in the queue")
        assert "selenium" in d.find_element(By.ID, "queue-pending").text
        # the same submission again is refused on the page with the command line's words
        d.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Submit')]").click()
        d.find_element(By.ID, "submit-button").click()
        wait_for(lambda: "already pending" in d.find_element(By.ID, "submit-answer").text, timeout=60, what="the refusal")
    finally:
        d.quit(); srv.terminate(); srv.wait(timeout=30)
    assert [r.model for r in Store(tmp_path).requests("PENDING")] == ["tiny-gpt_oss-random"]
