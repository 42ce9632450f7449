module cfrbench

go 1.27
