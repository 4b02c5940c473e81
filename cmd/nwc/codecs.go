package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/ortcodec"
)

// runCodecs lists the registered codecs and the trained neural codecs.
func runCodecs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("codecs", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	type entry struct {
		Name        string `json:"name"`
		ID          *uint8 `json:"id,omitempty"` // the section id it decodes
		Encodes     bool   `json:"encodes"`
		Lossy       bool   `json:"lossy"`
		Calibration bool   `json:"calibration"`
		Doc         string `json:"doc"`
	}
	var rep struct {
		Codecs  []entry         `json:"codecs"`
		Trained []ortcodec.Info `json:"trained_nwc_codecs"`
	}
	for _, c := range codec.List() {
		e := entry{Name: c.Name, Encodes: c.NewEncoder != nil, Lossy: c.Lossy, Calibration: c.Calibration, Doc: c.Doc}
		if c.NewDecoder != nil {
			id := c.ID
			e.ID = &id
		}
		rep.Codecs = append(rep.Codecs, e)
	}
	rep.Trained = ortcodec.List(nil)
	if *asJSON {
		return writeJSON(os.Stdout, rep)
	}
	fmt.Println("codecs (--codec NAME; id: the section format it decodes):")
	for _, e := range rep.Codecs {
		id := "  -"
		if e.ID != nil {
			id = fmt.Sprintf("%3d", *e.ID)
		}
		fmt.Printf("  %-12s %s  %s\n", e.Name, id, e.Doc)
	}
	fmt.Println("trained nwc codecs (--codec nwc:NAME; --codec nwc picks the rate closest to --bits):")
	for _, c := range rep.Trained {
		fmt.Printf("  %-18s %.2f bits/weight (measured on held-out weights)\n", c.Name, c.BitsPerWeight)
	}
	return nil
}
