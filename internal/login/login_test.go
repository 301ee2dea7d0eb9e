package login

import "testing"

func TestSameKey(t *testing.T) {
	cases := []struct {
		name   string
		single bool
		a, b   [2]string // user, device
		want   bool
	}{
		{"same user and device", false, [2]string{"u", "web"}, [2]string{"u", "web"}, true},
		{"other device", false, [2]string{"u", "web"}, [2]string{"u", "app"}, false},
		{"other user", false, [2]string{"u", "web"}, [2]string{"v", "web"}, false},
		{"single device: other device", true, [2]string{"u", "web"}, [2]string{"u", "app"}, true},
		{"single device: other user", true, [2]string{"u", "web"}, [2]string{"v", "web"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := SameKey(tc.single, tc.a[0], tc.a[1], tc.b[0], tc.b[1]); got != tc.want {
				t.Fatalf("SameKey = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewerOrder(t *testing.T) {
	cases := []struct {
		name string
		a, b Stamped
		want bool
	}{
		{"larger stamp wins", Stamped{Stamp: 2, Node: "a"}, Stamped{Stamp: 1, Node: "z"}, true},
		{"smaller stamp loses", Stamped{Stamp: 1, Node: "z"}, Stamped{Stamp: 2, Node: "a"}, false},
		{"tie: node name", Stamped{Stamp: 1, Node: "b"}, Stamped{Stamp: 1, Node: "a"}, true},
		{"tie: session id", Stamped{Stamp: 1, Node: "a", Session: "2"}, Stamped{Stamp: 1, Node: "a", Session: "1"}, true},
		{"identical", Stamped{Stamp: 1, Node: "a", Session: "1"}, Stamped{Stamp: 1, Node: "a", Session: "1"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Newer(tc.a, tc.b); got != tc.want {
				t.Fatalf("Newer = %v, want %v", got, tc.want)
			}
		})
	}
}
