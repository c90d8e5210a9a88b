"""Per-seed ratios of the mix on the CPU engine: continuum+ after (mix-s*-engine) and before
(before-s*-engine, before.sh) the bound in rounds, both against vllm of the after run (same
traces and host). Usage: python before_after.py 0 1 2 (the seeds)."""
import json, re, sys, math
import os
D=os.path.dirname(os.path.abspath(__file__))
def rows(path):
    out={}
    cur=None
    for line in open(path):
        m=re.match(r"### mix-cpu-24-s\d @ (\d+) JPS", line)
        if m: cur=int(m.group(1))
        m=re.match(r"\| (vllm|continuum\+)\s*\|\s*([\d.]+) \|\s*([\d.]+) \|\s*([\d.]+) \|[^|]*\|\s*([\d.]+) \|\s*([\d.]+) \|", line)
        if m and cur: out[(m.group(1),cur)]=(float(m.group(2)),float(m.group(3)),float(m.group(5)))
    return out
T={1:12.71,2:4.30}
def ci(xs):
    n=len(xs); m=sum(xs)/n
    if n<2: return f"{m:.2f}"
    sd=math.sqrt(sum((x-m)**2 for x in xs)/(n-1)); h=T[n-1]*sd/math.sqrt(n)
    return f"{m:.2f} [{m-h:.2f}, {m+h:.2f}]"
seeds=[int(s) for s in sys.argv[1:]]
for j in (1,2,4):
    a=[];b=[];ta=[];tb=[];ab=[]
    for s in seeds:
        new=rows(f"{D}/mix-s{s}-engine/report.md"); old=rows(f"{D}/before-s{s}-engine/report.md")
        v=new[('vllm',j)]; n=new[('continuum+',j)]; o=old[('continuum+',j)]
        a.append(n[0]/v[0]); b.append(o[0]/v[0]); ta.append(n[2]/v[2]); tb.append(o[2]/v[2]); ab.append(n[0]/o[0])
    print(f"mix @ {j}: mean JCT x vllm before {ci(b)} after {ci(a)} (per seed {' '.join(f'{x:.2f}->{y:.2f}' for x,y in zip(b,a))}); after/before {ci(ab)}; TTFT P99 x vllm before {ci(tb)} after {ci(ta)}")
