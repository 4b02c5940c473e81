package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/tensor"
)

type inspectTensor struct {
	Name          string  `json:"name"`
	DType         string  `json:"dtype"`
	Shape         []int64 `json:"shape"`
	Elements      int64   `json:"elements"`
	Bytes         int64   `json:"bytes"` // stored bytes (section bytes for .nwc)
	Codec         string  `json:"codec,omitempty"`
	BitsPerWeight float64 `json:"bits_per_weight"`
	SHA256        string  `json:"sha256_f32,omitempty"` // --digest: of the float32 values
}

type inspectReport struct {
	Path              string          `json:"path"`
	Format            string          `json:"format"`
	FileBytes         int64           `json:"file_bytes"`
	TensorCount       int             `json:"tensor_count"`
	Weights           int64           `json:"weights"`
	TensorBytes       int64           `json:"tensor_bytes"`
	BitsPerWeight     float64         `json:"bits_per_weight"`      // tensor bytes / weights
	FileBitsPerWeight float64         `json:"file_bits_per_weight"` // every file byte / weights
	Assets            []string        `json:"assets"`
	Verified          bool            `json:"verified,omitempty"`
	WeightsSHA256     string          `json:"weights_sha256,omitempty"` // --digest (digest.go)
	Tensors           []inspectTensor `json:"tensors"`
}

func runInspect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON report")
	verify := fs.Bool("verify", false, "for .nwc: check every checksum and padding byte of the file")
	digest := fs.Bool("digest", false, "decode every tensor to float32 and print sha256 digests (compare with nwc eval --digest)")
	var of ortFlags
	of.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(os.Stderr, "usage: nwc inspect PATH|NAME [--json] [--verify] [--digest] [--provider cpu|cuda] [--threads N]")
		return errUsage
	}
	if err := of.init(); err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	src, format, err := loader.Open(pos[0], of.env())
	if err != nil {
		return err
	}
	defer src.Close()
	path, _ := loader.Resolve(pos[0])
	rep := inspectReport{Path: path, Format: string(format)}
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		rep.FileBytes = st.Size()
	}
	for _, a := range src.Assets() {
		rep.Assets = append(rep.Assets, a.Name)
	}
	if nf, ok := src.(*loader.NWCFile); ok {
		if *verify {
			if err := nf.Container().Verify(); err != nil {
				return err
			}
			rep.Verified = true
		}
		for _, e := range nf.Container().Entries() {
			if e.Kind != container.KindTensor {
				continue
			}
			rep.add(e.Info(), e.SectionSize(), codec.Name(e.Codec))
		}
	} else {
		for _, ti := range src.Tensors() {
			rep.add(ti, ti.Size, "")
		}
	}
	if *digest {
		d, err := digestSource(loader.Prefetch(ctx, src, false, loader.PrefetchOptions{}))
		if err != nil {
			return err
		}
		for i := range rep.Tensors {
			rep.Tensors[i].SHA256 = d.per[rep.Tensors[i].Name]
		}
		rep.WeightsSHA256 = d.sum()
	}
	if rep.Weights > 0 {
		rep.BitsPerWeight = 8 * float64(rep.TensorBytes) / float64(rep.Weights)
		rep.FileBitsPerWeight = 8 * float64(rep.FileBytes) / float64(rep.Weights)
	}
	if *asJSON {
		return writeJSON(os.Stdout, rep)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "name\tdtype\tshape\tbytes\tcodec\tbits/weight\t")
	for _, t := range rep.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\t%.3f\t\n", t.Name, t.DType, t.Shape, t.Bytes, t.Codec, t.BitsPerWeight)
	}
	tw.Flush()
	fmt.Printf("%s (%s): %d tensors, %d weights, %d tensor bytes = %.3f bits/weight; file %d bytes = %.3f bits/weight\n",
		rep.Path, rep.Format, rep.TensorCount, rep.Weights, rep.TensorBytes, rep.BitsPerWeight, rep.FileBytes, rep.FileBitsPerWeight)
	if len(rep.Assets) > 0 {
		fmt.Printf("assets: %v\n", rep.Assets)
	}
	if rep.Verified {
		fmt.Println("verified: every section checksum and padding byte is intact")
	}
	if rep.WeightsSHA256 != "" {
		fmt.Printf("weights sha256 (float32 values): %s\n", rep.WeightsSHA256)
	}
	return nil
}

func (r *inspectReport) add(ti tensor.Info, bytes int64, codecName string) {
	n := ti.NumElements()
	t := inspectTensor{Name: ti.Name, DType: ti.DType.String(), Shape: ti.Shape, Elements: n, Bytes: bytes, Codec: codecName}
	if n > 0 {
		t.BitsPerWeight = 8 * float64(bytes) / float64(n)
	}
	r.Tensors = append(r.Tensors, t)
	r.TensorCount++
	r.Weights += n
	r.TensorBytes += bytes
}
