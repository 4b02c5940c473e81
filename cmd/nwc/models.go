package main

import (
	"context"
	"fmt"
	"os"

	"github.com/nwc-project/nwc/loader/refmodel"
)

func runModels(ctx context.Context, args []string) error {
	for _, name := range refmodel.Names() {
		m, err := refmodel.Lookup(name)
		if err != nil {
			return err
		}
		state := "cached"
		if _, err := os.Stat(m.File); err != nil {
			state = "missing (run make setup)"
		}
		fmt.Printf("%-14s %-12s %s  [%s]\n", name, m.Format, m.File, state)
	}
	return nil
}
