import sys
patches = []
while sys.argv[1].endswith(".py"):
    patches.append(sys.argv.pop(1))
for p in patches:
    exec(open(p).read(), {})
sys.path.insert(0, "/work/main/benchmarks")
import matrix
sys.exit(matrix.main(sys.argv[1:]))
