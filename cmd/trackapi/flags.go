package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// days is a duration flag that also takes days ("7d", "90d"), which time.ParseDuration does not:
// retention and expiry are naturally said in days.
type days time.Duration

// UnmarshalText lets kong parse the flag.
func (d *days) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseFloat(n, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("%q: want a number of days such as 7d, or a duration such as 12h", s)
		}
		*d = days(time.Duration(v * float64(24*time.Hour)))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q: want a number of days such as 7d, or a duration such as 12h", s)
	}
	*d = days(v)
	return nil
}
