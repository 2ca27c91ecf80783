"""Reading job.json (alignd.trl-job/v1, daemon/remote/job-spec.ts) and checking its inputs' checksums."""
import hashlib
import json
import os

JOB_FORMAT = "alignd.trl-job/v1"
METRICS_FORMAT = "alignd.trl-metrics/v1"


class JobError(Exception):
    """A job directory alignd cannot have written: refused before any training."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_job(path: str) -> tuple[dict, str]:
    """The job spec and its directory; every input file's sha256 checked against the spec."""
    job_dir = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    if job.get("format") != JOB_FORMAT:
        raise JobError(f"job.json format is {job.get('format')!r}; this job reads {JOB_FORMAT!r} (alignd and trainers/trl differ in version)")
    for rel, want in job["files"].items():
        got = sha256_file(os.path.join(job_dir, rel))
        if got != want:
            raise JobError(f"{rel} has sha256 {got}, job.json says {want}: the shared storage holds a torn or altered copy")
    return job, job_dir


def read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
