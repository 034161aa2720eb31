package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEveryFileSettingReachesItsFlag sets each scalar key of the YAML
// config to a value of its own and checks that the flag of the same name
// reads it: a key the re-apply forgets would be silently ignored.
func TestEveryFileSettingReachesItsFlag(t *testing.T) {
	rt := reflect.TypeOf(fileConfig{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		c := defaultConfig()
		v := reflect.ValueOf(&c).Elem().Field(i)
		var want string
		switch {
		case f.Type == reflect.TypeOf(time.Duration(0)):
			v.SetInt(int64(17 * time.Second))
			want = "17s"
		case f.Type.Kind() == reflect.String:
			v.SetString("set-from-the-file")
			want = "set-from-the-file"
		case f.Type.Kind() == reflect.Bool:
			v.SetBool(!v.Bool())
			want = "true"
			if !v.Bool() {
				want = "false"
			}
		case f.Type.Kind() == reflect.Int:
			v.SetInt(4242)
			want = "4242"
		case f.Type.Kind() == reflect.Float64:
			v.SetFloat(0.125)
			want = "0.125"
		default:
			continue // lists (webhooks) are read from the file directly
		}
		flagName := strings.ReplaceAll(key, "_", "-")
		if got := fieldString(c, flagName); got != want {
			t.Errorf("YAML key %s: flag --%s reads %q from the file, want %q (a case missing in fieldString?)", key, flagName, got, want)
		}
	}
}
