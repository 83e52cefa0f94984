"""Child processes of a benchmark run (bench/run.py, bench/scale.py): each in a session of its
own with its output in the run's temp dir, stopped (SIGTERM, then SIGKILL) and all killed at
the end whatever happens."""
import os
import signal
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ProcessOwner:
    """Mixin: the class sets `self.tmp` and `self.procs = []`; `env` (None: this process's
    environment) and `stop_wait` (seconds before SIGKILL) may be overridden."""
    env = None
    stop_wait = 20

    def spawn(self, argv, log, **kw):
        f = open(os.path.join(self.tmp, log), "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(self.stop_wait)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def cleanup(self):
        for p in self.procs:
            self.stop(p, signal.SIGKILL)
