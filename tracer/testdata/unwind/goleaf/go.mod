module goleaf

go 1.21
