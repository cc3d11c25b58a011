#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Disk images as roots: raw and qcow2 images made here from the built-in image's rootfs with the
# host's own mkfs.ext4 and qemu-img, booted in real microVMs. Four sandboxes in all, since each
# boot takes seconds under emulation.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest

    $script:Work = Join-Path ([IO.Path]::GetTempPath()) "msb-disks-$PID"
    $tree = Join-Path $script:Work 'tree'
    New-Item -ItemType Directory -Force $tree | Out-Null
    & tar -xf (Join-Path (Split-Path $env:MSB_TEST_MODULE_PATH) 'guest/rootfs.tar') -C $tree
    Set-Content (Join-Path $tree 'marker') 'from-disk'

    function New-Ext4Image {
        # A sparse file holding the tree as ext4, at -Offset bytes (mke2fs populates without root).
        param([string] $Path, [long] $Offset = 0)
        $file = [IO.File]::Create($Path)
        try { $file.SetLength($Offset + 64MB) } finally { $file.Dispose() }
        $out = & mkfs.ext4 -q -F -d $tree -E "offset=$Offset" $Path 64M 2>&1
        if ($LASTEXITCODE -ne 0) { throw "mkfs.ext4 failed: $out" }
    }

    $script:Raw = Join-Path $script:Work 'root.img'
    New-Ext4Image $script:Raw
    $script:Qcow2 = Join-Path $script:Work 'root.qcow2'
    $out = & qemu-img convert -f raw -O qcow2 $script:Raw $script:Qcow2 2>&1
    if ($LASTEXITCODE -ne 0) { throw "qemu-img convert failed: $out" }

    # One MBR partition from 1 MiB, type Linux, holding the same tree.
    $script:Partitioned = Join-Path $script:Work 'partitioned.img'
    New-Ext4Image $script:Partitioned -Offset 1MB
    $mbr = [byte[]]::new(512)
    $mbr[446 + 4] = 0x83
    [BitConverter]::GetBytes([uint32](1MB / 512)).CopyTo($mbr, 446 + 8)
    [BitConverter]::GetBytes([uint32](64MB / 512)).CopyTo($mbr, 446 + 12)
    $mbr[510] = 0x55; $mbr[511] = 0xaa
    $file = [IO.File]::OpenWrite($script:Partitioned)
    try { $file.Write($mbr, 0, 512) } finally { $file.Dispose() }

    $script:SandboxFolders = Join-Path $env:MSB_HOME 'sandboxes'
}

AfterAll {
    Get-Sandbox -Name 'disk-*' -ErrorAction Ignore | Remove-Sandbox -Force
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Sandboxes from qcow2 disk images' -Tag VM {
    BeforeAll {
        $script:Qcow2Hash = (Get-FileHash $script:Qcow2).Hash
    }

    It 'boots the image as a writable root, on an overlay of its own' {
        $s = New-Sandbox -Name disk-q1 -Image $script:Qcow2 -WarningAction SilentlyContinue -ErrorAction Stop
        $s.Image | Should -Be $script:Qcow2
        (Get-Sandbox -Name disk-q1).Image | Should -Be $script:Qcow2
        Join-Path $s.Directory 'root.qcow2' | Should -Exist
        Join-Path $s.Directory 'upper.img' | Should -Not -Exist
        Invoke-SandboxCommand -Name disk-q1 -Command 'cat /marker; echo kept > /written; sync' |
            Should -Be 'from-disk'
    }

    It 'keeps what was written across Stop-Sandbox and Start-Sandbox' {
        Stop-Sandbox -Name disk-q1
        Start-Sandbox -Name disk-q1 -WarningAction SilentlyContinue -ErrorAction Stop
        Invoke-SandboxCommand -Name disk-q1 -Command 'cat /written' | Should -Be 'kept'
    }

    It 'gives a second sandbox of the same image a root without the first one''s files' {
        $null = New-Sandbox -Name disk-q2 -Image $script:Qcow2 -WarningAction SilentlyContinue -ErrorAction Stop
        Invoke-SandboxCommand -Name disk-q2 -Command 'cat /marker; test -e /written && echo seen || echo unseen' |
            Should -Be @('from-disk', 'unseen')
    }

    It 'never writes the original image' {
        Stop-Sandbox -Name disk-q1
        Stop-Sandbox -Name disk-q2
        (Get-FileHash $script:Qcow2).Hash | Should -Be $script:Qcow2Hash
    }

    It 'refuses to start with DiskImageMissing once the original is gone' {
        Move-Item $script:Qcow2 "$script:Qcow2.moved"
        try {
            $r = Invoke-Captured { Start-Sandbox -Name disk-q2 -WarningAction SilentlyContinue }
            Get-ErrorId $r.Errors[0] | Should -Be 'DiskImageMissing'
            $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
            $r.Errors[0].TargetObject | Should -Be $script:Qcow2
        }
        finally {
            Move-Item "$script:Qcow2.moved" $script:Qcow2
        }
        Remove-Sandbox -Name disk-q1, disk-q2 -Force
    }
}

Describe 'Sandboxes from raw disk images' -Tag VM {
    It 'boots a copy of the image of its own, leaving the original untouched' {
        $hash = (Get-FileHash $script:Raw).Hash
        $s = New-Sandbox -Name disk-raw -Image $script:Raw -WarningAction SilentlyContinue -ErrorAction Stop
        $s.Image | Should -Be $script:Raw
        Join-Path $s.Directory 'root.img' | Should -Exist
        Invoke-SandboxCommand -Name disk-raw -Command 'cat /marker; echo new > /written; cat /written; sync' |
            Should -Be @('from-disk', 'new')
        Remove-Sandbox -Name disk-raw -Force
        (Get-FileHash $script:Raw).Hash | Should -Be $hash
        $s.Directory | Should -Not -Exist
    }

    It 'boots the root from a partition of an MBR-partitioned image' {
        $s = New-Sandbox -Name disk-part -Image $script:Partitioned -WarningAction SilentlyContinue -ErrorAction Stop
        Invoke-SandboxCommand -Name disk-part -Command 'cat /marker; echo ok > /written; cat /written' |
            Should -Be @('from-disk', 'ok')
        Invoke-SandboxCommand -Name disk-part -Command "grep ' / ' /proc/mounts | cut -d' ' -f1-3" |
            Should -Be '/dev/vda1 / ext4'
        Remove-Sandbox -Name disk-part -Force
    }
}

Describe 'Files that are no disk image' -Tag VM {
    It 'rejects <Case> with DiskImageInvalid, creating nothing' -ForEach @(
        @{ Case = 'a file of random bytes'; Bytes = { [byte[]](Get-Random -Count 65536 -Maximum 256 -SetSeed 7) } }
        @{ Case = 'an empty file'; Bytes = { [byte[]]::new(0) } }
    ) {
        $path = Join-Path $script:Work "bad-$([guid]::NewGuid().ToString('N').Substring(0, 6)).img"
        [IO.File]::WriteAllBytes($path, [byte[]]@(& $Bytes))
        $before = @(Get-ChildItem $script:SandboxFolders -Directory -ErrorAction Ignore | ForEach-Object Name)
        $r = Invoke-Captured { New-Sandbox -Name disk-bad -Image $path -WarningAction SilentlyContinue }
        Get-ErrorId $r.Errors[0] | Should -Be 'DiskImageInvalid'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidData'
        $r.Errors[0].TargetObject | Should -Be $path
        Get-Sandbox | Where-Object Name -EQ 'disk-bad' | Should -BeNullOrEmpty
        @(Get-ChildItem $script:SandboxFolders -Directory -ErrorAction Ignore | ForEach-Object Name) |
            Where-Object { $_ -notin $before } | Should -BeNullOrEmpty
    }
}
