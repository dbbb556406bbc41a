#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include KERNEL_H
#ifdef ACEGEN_PROFILE
extern double prof_t[8];
#endif
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+1e-9*t.tv_nsec;}
int main(int argc, char **argv){
  FILE *f=fopen(argv[1],"rb"); int64_t hdr[2]; fread(hdr,8,2,f);
  int64_t n=hdr[0], np_=hdr[1];
  int32_t *sp=malloc(4*n); int64_t *off=malloc(8*(n+1)); int32_t *nbs=malloc(4*np_); double *rij=malloc(24*np_);
  fread(sp,4,n,f); fread(off,8,n+1,f); fread(nbs,4,np_,f); fread(rij,24,np_,f); fclose(f);
  double *E=malloc(8*n), *d=malloc(24*np_); int64_t err;
  int reps = argc>2? atoi(argv[2]) : 5; int nt = argc>3? atoi(argv[3]):1;
  double best=1e30, tot=0;
  for(int r=0;r<reps;r++){ double t=now(); int rc=KERNEL_FN(n,sp,off,nbs,rij,E,d,nt,&err); t=now()-t; if(rc) {printf("rc %d\n",rc);return 1;} if(t<best)best=t; tot+=t;}
  double es=0; for(int i=0;i<n;i++) es+=E[i]; double ds=0; for(int64_t k=0;k<3*np_;k++) ds+=d[k]*(k%7);
  printf("E %.15g chk %.15g  best %.1f us/atom mean %.1f\n", es, ds, best/n*1e6, tot/reps/n*1e6);
#ifdef ACEGEN_PROFILE
  const char *nm[8]={"radial","angular","A","fwd","emb","rev","force","other"};
  for(int i=0;i<8;i++) printf("%s %.1f us/atom\n", nm[i], prof_t[i]/reps/n*1e6);
#endif
}
