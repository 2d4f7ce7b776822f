#!/usr/bin/env python
"""The 4x1 kernel in the plain layout (X [M,K] in, fp32 rows out: transposes X on every call) vs the layout the
native engine uses (X already transposed, u8 output transposed), against dense int8 with u8 output; M = 128,
2 threads, interleaved, median us. Never asserts.

    python bench/kernel_layouts.py
"""
import time, numpy as np
from edgekit import kernels as K
K.set_num_threads(2)
rng=np.random.default_rng(0)
for (Kd,N) in ((384,1536),(1536,384)):
  for s in (0.0,0.8,0.9):
    w=rng.integers(-128,128,(N,Kd),dtype=np.int8)
    if s: keep=rng.random(((N+3)//4,Kd))>=s; w=(w*np.repeat(keep,4,0)[:N]).astype(np.int8)
    p=K.pack_s8(w,"4x1" if s else "dense"); ws=np.ones(N,np.float32); x=rng.integers(0,256,(128,Kd),dtype=np.uint8)
    xt=np.zeros((Kd,128),np.uint8); xt[:]=x.T
    fs={"plain f32":lambda: K.gemm_u8s8(p,x,1.0,3,ws), "T-in T-out u8":lambda: K.gemm_u8s8_t(p,xt,128,True,True,1.0,3,ws,out_u8=True,out_scale=1.0)} if s else {"plain f32":lambda: K.gemm_u8s8(p,x,1.0,3,ws), "plain u8":lambda: K.gemm_u8s8(p,x,1.0,3,ws,out_u8=True,out_scale=1.0)}
    res={k:[] for k in fs}
    for f in fs.values():
        for _ in range(30): f()
    for r in range(10):
        for k,f in fs.items():
            for _ in range(50):
                a=time.perf_counter(); f(); res[k].append(time.perf_counter()-a)
    print(Kd,N,s, {k:round(float(np.median(v))*1e6,1) for k,v in res.items()})
