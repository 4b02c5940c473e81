package report

import (
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/vgimg"
)

type vgCanvas = vgimg.PngCanvas

func newCanvas(w, h vg.Length) *vgCanvas {
	return &vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
}
