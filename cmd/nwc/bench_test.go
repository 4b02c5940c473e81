//go:build cgo

package main

import (
	"strings"
	"testing"
)

func TestBenchPoints(t *testing.T) {
	pts, err := benchPoints([]string{"rtn-g128=3,4", "ecsq=2.5", "nwc=nwc-gain-l300,nwc-w128d2-l300-dw32d1"}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pts {
		got = append(got, p.codec+"|"+p.method+"|"+p.setting)
	}
	want := "rtn-g128|rtn-g128|3 bits rtn-g128|rtn-g128|4 bits ecsq|ecsq|2.5 bits nwc:nwc-gain-l300|nwc-gain|nwc-gain-l300 nwc:nwc-w128d2-l300-dw32d1|nwc-w128d2-dw32d1|nwc-w128d2-l300-dw32d1"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %q", strings.Join(got, " "))
	}
	if pts[3].bits != 0 || pts[2].bits != 2.5 {
		t.Fatalf("bits %v", pts)
	}
	// --codecs x --bits without --run.
	pts, err = benchPoints(nil, "rtn-g128,rtn-row", "2,8")
	if err != nil || len(pts) != 4 || pts[3].codec != "rtn-row" || pts[3].bits != 8 {
		t.Fatalf("%v %v", pts, err)
	}
	for _, bad := range []string{"rtn-g128", "ecsq=x", "ecsq=3,"} {
		if _, err := benchPoints([]string{bad}, "", ""); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
