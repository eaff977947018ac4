#!/usr/bin/env python3
"""
First run, measured as a newcomer meets it: clone this repository into a private (0700) `mktemp -d` folder, run
`npm start` there (as whoever runs this script: root in a container, or an ordinary user), and time the first change
line on stdout — once on the bare clone (the npm scripts fetch Node 24 when the machine's is older, and install the
dependencies), once again with everything installed. Stops each with SIGTERM and prints the exit codes and the last
lines of stderr. Not part of `npm test`; the embedded server's data folder stays (under /var/tmp when root).

    python3 scripts/first-run.py
"""
import subprocess, time, os, sys, signal, tempfile
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
d = subprocess.check_output(["mktemp","-d"]).decode().strip()
os.chmod(d, 0o700)
subprocess.check_call(["git","clone","-q",REPO, d+"/slotkeeper"])
repo = d+"/slotkeeper"
t0 = time.time()
p = subprocess.Popen(["npm","start"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
first = None
import threading
errs=[]
def rd():
    for l in p.stderr: errs.append(l)
threading.Thread(target=rd,daemon=True).start()
for line in p.stdout:
    if line.startswith("{") and '"op"' in line:
        first = time.time()-t0
        print("first change line after %.1f s (including npm ci in a fresh clone)" % first)
        print(line.strip()[:300])
        break
os.killpg(p.pid, signal.SIGTERM)
rc = p.wait(timeout=30)
print("exit", rc, "dir", d, "whoami", os.getuid())
print("".join(errs[-15:]))
# second start: deps installed, warm
t0 = time.time()
p = subprocess.Popen(["npm","start"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
for line in p.stdout:
    if line.startswith("{") and '"op"' in line:
        print("second start: first change line after %.1f s" % (time.time()-t0)); break
os.killpg(p.pid, signal.SIGTERM)
print("exit", p.wait(timeout=30))
