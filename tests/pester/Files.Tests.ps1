#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Files in and out of sandboxes: Copy-SandboxItem in every direction, listings, content, new,
# remove and test. Two sandboxes serve every test: 'files' for most, 'files-b' as the other end of
# sandbox-to-sandbox copies and, stopped at the end, for the stopped-sandbox errors.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $null = New-Sandbox -Name files -WarningAction SilentlyContinue -ErrorAction Stop
    $null = New-Sandbox -Name files-b -WarningAction SilentlyContinue -ErrorAction Stop
    $script:Scratch = Join-Path ([IO.Path]::GetTempPath()) "msb-files-$PID"
    New-Item -ItemType Directory -Force $script:Scratch | Out-Null

    function Invoke-Guest([string] $Command, [string] $Sandbox = 'files') {
        Invoke-SandboxCommand -Name $Sandbox -Command $Command -ErrorAction Stop
    }

    function Get-Sha256File([string] $Path) { (Get-FileHash -Algorithm SHA256 $Path).Hash.ToLowerInvariant() }

    function Set-HostItem([string] $Path, [string] $Mode, [long] $Seconds) {
        [IO.File]::SetUnixFileMode($Path, [Convert]::ToInt32($Mode, 8))
        [IO.File]::SetLastWriteTimeUtc($Path, [DateTime]::UnixEpoch.AddSeconds($Seconds))
    }

    function Get-HostMode([string] $Path) { [Convert]::ToString([int][IO.File]::GetUnixFileMode($Path), 8) }

    function Get-HostSeconds([string] $Path) {
        [long]([IO.File]::GetLastWriteTimeUtc($Path) - [DateTime]::UnixEpoch).TotalSeconds
    }
}

AfterAll {
    Remove-Sandbox -Name files, files-b -Force -ErrorAction Ignore
    Remove-Item $script:Scratch -Recurse -Force -ErrorAction Ignore
}

Describe 'Copy-SandboxItem into a sandbox' -Tag VM {
    BeforeAll {
        $src = Join-Path $script:Scratch 'src'
        New-Item -ItemType Directory -Force "$src/sub" | Out-Null
        Set-Content "$src/a.txt" 'alpha' -NoNewline
        Set-Content "$src/sub/run.sh" 'echo run' -NoNewline
        Set-HostItem "$src/a.txt" '640' 1000000000
        Set-HostItem "$src/sub/run.sh" '755' 1100000000
        New-Item -ItemType SymbolicLink -Path "$src/sub/link" -Target '../a.txt' | Out-Null
        Set-HostItem "$src/sub" '750' 1200000000
    }

    It 'copies a file with its mode and modification time' {
        Copy-SandboxItem -Path "$src/a.txt" -ToSandbox files -Destination /tmp/in-file.txt
        Invoke-Guest 'stat -c "%a %Y" /tmp/in-file.txt; cat /tmp/in-file.txt' | Should -Be @('640 1000000000', 'alpha')
    }

    It 'copies a folder with -Recurse into an existing directory, modes, times and links kept' {
        $items = Copy-SandboxItem -Path $src -ToSandbox files -Destination /tmp -Recurse -PassThru
        $items.FullName | Should -Be '/tmp/src'
        Invoke-Guest 'cd /tmp/src; stat -c "%n %a %Y" a.txt sub sub/run.sh; readlink sub/link; cat sub/link' |
            Should -Be @('a.txt 640 1000000000', 'sub 750 1200000000', 'sub/run.sh 755 1100000000', '../a.txt', 'alpha')
    }

    It 'resolves host wildcards and relative paths through the provider' {
        Push-Location $src
        try { Copy-SandboxItem -Path './*.txt' -ToSandbox files -Destination /tmp } finally { Pop-Location }
        Invoke-Guest 'cat /tmp/a.txt' | Should -Be 'alpha'
    }

    It 'says HostPathNotFound for a host path that is not there' {
        $missing = Join-Path $script:Scratch 'missing.txt'
        $r = Invoke-Captured { Copy-SandboxItem -Path $missing -ToSandbox files -Destination /tmp }
        Get-ErrorId $r.Errors[0] | Should -Be 'HostPathNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be $missing
    }

    It 'says RecurseRequired for a folder without -Recurse' {
        $r = Invoke-Captured { Copy-SandboxItem -Path $src -ToSandbox files -Destination /tmp/norecurse }
        Get-ErrorId $r.Errors[0] | Should -Be 'RecurseRequired'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -Be $src
        Test-SandboxPath -Name files /tmp/norecurse | Should -BeFalse
    }

    It 'says SandboxPathNotFound when the destination folder is missing' {
        $r = Invoke-Captured { Copy-SandboxItem -Path "$src/a.txt" -ToSandbox files -Destination /nope/a.txt }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxPathNotFound'
        $r.Errors[0].TargetObject | Should -Be '/nope'
    }
}

Describe 'Copy-SandboxItem out of a sandbox' -Tag VM {
    BeforeAll {
        Invoke-Guest ('mkdir -p /tmp/out/d && printf xyz > /tmp/out/d/f && chmod 750 /tmp/out/d/f && ' +
            'touch -d @1300000000 /tmp/out/d/f && chmod 700 /tmp/out/d && touch -d @1400000000 /tmp/out/d')
    }

    It 'copies a folder with -Recurse, modes and times kept on the host' {
        $dest = Join-Path $script:Scratch 'out'
        New-Item -ItemType Directory -Force $dest | Out-Null
        $items = Copy-SandboxItem -Path /tmp/out -FromSandbox files -Destination $dest -Recurse -PassThru
        $items | Should -BeOfType [IO.DirectoryInfo]
        $items.FullName | Should -Be (Join-Path $dest 'out')
        Get-Content -Raw "$dest/out/d/f" | Should -Be 'xyz'
        Get-HostMode "$dest/out/d/f" | Should -Be '750'
        Get-HostSeconds "$dest/out/d/f" | Should -Be 1300000000
        Get-HostMode "$dest/out/d" | Should -Be '700'
        Get-HostSeconds "$dest/out/d" | Should -Be 1400000000
    }

    It 'says RecurseRequired for a folder without -Recurse' {
        $dest = Join-Path $script:Scratch 'out-norecurse'
        New-Item -ItemType Directory -Force $dest | Out-Null
        $r = Invoke-Captured { Copy-SandboxItem -Path /tmp/out -FromSandbox files -Destination $dest }
        Get-ErrorId $r.Errors[0] | Should -Be 'RecurseRequired'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -Be '/tmp/out'
        @(Get-ChildItem -Force $dest) | Should -BeNullOrEmpty
    }

    It 'takes guest items from Get-SandboxChildItem through the pipeline' {
        $dest = Join-Path $script:Scratch 'piped'
        New-Item -ItemType Directory -Force $dest | Out-Null
        Get-SandboxChildItem -Name files /tmp/out/d | Copy-SandboxItem -Destination $dest
        Get-Content -Raw "$dest/f" | Should -Be 'xyz'
    }

    It 'says SandboxPathNotFound for a guest path that is not there' {
        $r = Invoke-Captured { Copy-SandboxItem -Path /nope -FromSandbox files -Destination $script:Scratch }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxPathNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be '/nope'
    }

    It 'writes nothing outside the destination, whatever links the guest planted' {
        Invoke-Guest ('mkdir -p /tmp/trap/inner && echo ok > /tmp/trap/ok.txt && ' +
            'ln -s /etc /tmp/trap/inner/etc-link && ln -s ../../outside /tmp/trap/inner/escape && ' +
            'ln -s ../ok.txt /tmp/trap/inner/fine')
        $dest = Join-Path $script:Scratch 'trapdest'
        New-Item -ItemType Directory -Force $dest | Out-Null
        $before = @(Get-ChildItem -Recurse -Force $script:Scratch | Where-Object FullName -notlike "$dest*" |
            ForEach-Object FullName)

        $r = Invoke-Captured { Copy-SandboxItem -Path /tmp/trap -FromSandbox files -Destination $dest -Recurse }

        @($r.Errors | ForEach-Object { Get-ErrorId $_ }) | Should -Be @('PathOutsideDestination', 'PathOutsideDestination')
        $r.Errors.TargetObject | Sort-Object |
            Should -Be @((Join-Path $dest 'trap/inner/escape'), (Join-Path $dest 'trap/inner/etc-link'))
        Test-Path -LiteralPath "$dest/trap/inner/etc-link" | Should -BeFalse
        Test-Path -LiteralPath "$dest/trap/inner/escape" | Should -BeFalse
        Get-Content "$dest/trap/inner/fine" | Should -Be 'ok'
        Test-Path -LiteralPath (Join-Path $script:Scratch 'outside') | Should -BeFalse
        $after = @(Get-ChildItem -Recurse -Force $script:Scratch | Where-Object FullName -notlike "$dest*" |
            ForEach-Object FullName)
        $after | Should -Be $before
    }

    It 'never writes through a link planted in the destination tree' {
        Invoke-Guest 'mkdir -p /tmp/plant/sub && echo secret > /tmp/plant/sub/x'
        $dest = Join-Path $script:Scratch 'plantdest'
        $victim = Join-Path $script:Scratch 'victim'
        New-Item -ItemType Directory -Force "$dest/plant", $victim | Out-Null
        New-Item -ItemType SymbolicLink -Path "$dest/plant/sub" -Target $victim | Out-Null

        $r = Invoke-Captured { Copy-SandboxItem -Path /tmp/plant -FromSandbox files -Destination $dest -Recurse }

        Get-ErrorId $r.Errors[0] | Should -Be 'PathOutsideDestination'
        @(Get-ChildItem -Force $victim) | Should -BeNullOrEmpty
    }
}

Describe 'Large files' -Tag VM {
    It 'copies 64 MiB in and out with equal SHA-256' {
        $file = Join-Path $script:Scratch 'big.bin'
        $bytes = [byte[]]::new(64MB)
        [Random]::new(5).NextBytes($bytes)
        [IO.File]::WriteAllBytes($file, $bytes)
        $bytes = $null
        $hash = Get-Sha256File $file

        Copy-SandboxItem -Path $file -ToSandbox files -Destination /tmp/big.bin
        Invoke-Guest 'sha256sum /tmp/big.bin | cut -d" " -f1' | Should -Be $hash

        $back = Join-Path $script:Scratch 'big-back.bin'
        Copy-SandboxItem -Path /tmp/big.bin -FromSandbox files -Destination $back
        Get-Sha256File $back | Should -Be $hash
    }
}

Describe 'Copy-SandboxItem between sandboxes' -Tag VM {
    It 'streams a folder from one sandbox to another, modes, owners and times kept' {
        Invoke-Guest ('mkdir -p /tmp/s2s/sub && printf hi > /tmp/s2s/f && chown 5:6 /tmp/s2s/f && chmod 604 /tmp/s2s/f && ' +
            'touch -d @1500000000 /tmp/s2s/f && chmod 710 /tmp/s2s/sub && touch -d @1400000000 /tmp/s2s/sub && ' +
            'chmod 750 /tmp/s2s && touch -d @1300000000 /tmp/s2s')
        Copy-SandboxItem -Path /tmp/s2s -FromSandbox files -ToSandbox files-b -Destination /tmp -Recurse
        Invoke-Guest 'stat -c "%a %u:%g %Y" /tmp/s2s/f; cat /tmp/s2s/f' files-b | Should -Be @('604 5:6 1500000000', 'hi')
        # Folders keep theirs too, the copied folder itself included.
        Invoke-Guest 'stat -c "%n %a %Y" /tmp/s2s /tmp/s2s/sub' files-b |
            Should -Be @('/tmp/s2s 750 1300000000', '/tmp/s2s/sub 710 1400000000')
    }

    It 'says RecurseRequired for a folder without -Recurse' {
        Invoke-Guest 'mkdir -p /tmp/s2s-norecurse/d'
        $r = Invoke-Captured {
            Copy-SandboxItem -Path /tmp/s2s-norecurse -FromSandbox files -ToSandbox files-b -Destination /tmp
        }
        Get-ErrorId $r.Errors[0] | Should -Be 'RecurseRequired'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -Be '/tmp/s2s-norecurse'
        Test-SandboxPath -Name files-b /tmp/s2s-norecurse | Should -BeFalse
    }

    It 'streams 64 MiB between sandboxes with equal SHA-256' {
        $hash = Invoke-Guest 'sha256sum /tmp/big.bin | cut -d" " -f1'
        Copy-SandboxItem -Path /tmp/big.bin -FromSandbox files -ToSandbox files-b -Destination /tmp/big2.bin
        Invoke-Guest 'sha256sum /tmp/big2.bin | cut -d" " -f1; rm /tmp/big2.bin' files-b | Should -Be $hash
    }
}

Describe 'Get-SandboxChildItem' -Tag VM {
    BeforeAll {
        Invoke-Guest ('mkdir -p /tmp/ls/dir/deep && printf hello > /tmp/ls/file && chmod 751 /tmp/ls/file && ' +
            'chown 3:4 /tmp/ls/file && touch -d @1600000000 /tmp/ls/file && ln -s file /tmp/ls/link && ' +
            'touch /tmp/ls/dir/deep/leaf')
    }

    It 'returns an object per item with its properties' {
        $items = Get-SandboxChildItem -Name files -Path /tmp/ls | Sort-Object Name
        $items.Name | Should -Be @('dir', 'file', 'link')
        $file = $items[1]
        $file | Should -BeOfType [Microsandbox.Engine.SandboxItem]
        $file.FullName | Should -Be '/tmp/ls/file'
        $file.Sandbox | Should -Be 'files'
        $file.Type | Should -Be 'File'
        $file.Length | Should -Be 5
        $file.Mode | Should -Be '-rwxr-x--x'
        [int]$file.UnixMode | Should -Be ([Convert]::ToInt32('751', 8))
        $file.LastWriteTimeUtc | Should -Be ([DateTime]::UnixEpoch.AddSeconds(1600000000))
        $file.UserId, $file.GroupId | Should -Be @(3, 4)
        $items[0].Type | Should -Be 'Directory'
        $items[0].Mode | Should -BeLike 'd*'
        $items[2].Type | Should -Be 'SymbolicLink'
        $items[2].Target | Should -Be 'file'
    }

    It 'lists subdirectories with -Recurse and shows a table by default' {
        (Get-SandboxChildItem -Name files /tmp/ls -Recurse).FullName | Should -Contain '/tmp/ls/dir/deep/leaf'
        $table = Get-SandboxChildItem -Name files /tmp/ls | Out-String
        $table | Should -Match 'Mode\s+Owner\s+LastWriteTime\s+Length\s+Name'
        $table | Should -Match 'link -> file'
    }

    It 'says SandboxPathNotFound for a missing directory' {
        $r = Invoke-Captured { Get-SandboxChildItem -Name files /tmp/ls/none }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxPathNotFound'
        $r.Errors[0].TargetObject | Should -Be '/tmp/ls/none'
    }
}

Describe 'Get-SandboxContent and Set-SandboxContent' -Tag VM {
    It 'round-trips UTF-8 text as lines' {
        Set-SandboxContent -Name files -Path /tmp/text.txt -Value 'héllo', 'wörld ✓'
        Get-SandboxContent -Name files /tmp/text.txt | Should -Be @('héllo', 'wörld ✓')
        Get-SandboxContent -Name files /tmp/text.txt -Raw | Should -BeExactly "héllo`nwörld ✓`n"
        Invoke-Guest 'wc -c < /tmp/text.txt' | Should -Be '18'
        Get-SandboxContent -Name files /tmp/text.txt -Tail 1 | Should -Be 'wörld ✓'
    }

    It 'takes values from the pipeline and writes no line feed with -NoNewline' {
        'a', 'b' | Set-SandboxContent -Name files -Path /tmp/nonl.txt -NoNewline
        Invoke-Guest 'od -An -c /tmp/nonl.txt' | ForEach-Object Trim | Should -Be 'a   b'
        Get-SandboxContent -Name files /tmp/nonl.txt -Raw | Should -BeExactly 'ab'
    }

    It 'round-trips bytes with -AsByteStream' {
        $bytes = [byte[]](0, 1, 255, 10, 13, 128)
        Set-SandboxContent -Name files -Path /tmp/bytes.bin -Value $bytes -AsByteStream
        $got = Get-SandboxContent -Name files /tmp/bytes.bin -AsByteStream -Raw
        $got.GetType() | Should -Be ([byte[]])
        [Convert]::ToHexString($got) | Should -Be ([Convert]::ToHexString($bytes))
        @(Get-SandboxContent -Name files /tmp/bytes.bin -AsByteStream).Count | Should -Be 6
    }

    It 'says SandboxPathNotFound for a file that is not there' {
        $r = Invoke-Captured { Get-SandboxContent -Name files /tmp/none.txt }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxPathNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be '/tmp/none.txt'
    }
}

Describe 'New-SandboxItem, Remove-SandboxItem and Test-SandboxPath' -Tag VM {
    It 'creates a file with content and a directory' {
        $file = New-SandboxItem -Name files -Path /tmp/new/made.txt -Value 'made' -Force
        $file.Type | Should -Be 'File'
        $file.Length | Should -Be 4
        (New-SandboxItem -Name files -Path /tmp/newdir -ItemType Directory).Type | Should -Be 'Directory'
        Invoke-Guest 'cat /tmp/new/made.txt; echo; stat -c %F /tmp/newdir' | Should -Be @('made', 'directory')
    }

    It 'says SandboxPathExists for an existing item without -Force' {
        $r = Invoke-Captured { New-SandboxItem -Name files -Path /tmp/newdir -ItemType Directory }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxPathExists'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ResourceExists'
    }

    It 'tests leaf, container and missing paths' {
        Test-SandboxPath -Name files /tmp/new/made.txt -PathType Leaf | Should -BeTrue
        Test-SandboxPath -Name files /tmp/new/made.txt -PathType Container | Should -BeFalse
        Test-SandboxPath -Name files /tmp/new -PathType Container | Should -BeTrue
        Test-SandboxPath -Name files /tmp/new | Should -BeTrue
        Test-SandboxPath -Name files /tmp/missing | Should -BeFalse
        Test-SandboxPath -Name files /tmp/new, /tmp/missing | Should -Be @($true, $false)
    }

    It 'refuses a non-empty directory without -Recurse and removes it with -Recurse' {
        $r = Invoke-Captured { Remove-SandboxItem -Name files -Path /tmp/new }
        Get-ErrorId $r.Errors[0] | Should -Be 'DirectoryNotEmpty'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidOperation'
        $r.Errors[0].TargetObject | Should -Be '/tmp/new'
        Test-SandboxPath -Name files /tmp/new/made.txt | Should -BeTrue

        Remove-SandboxItem -Name files -Path /tmp/new -Recurse
        Test-SandboxPath -Name files /tmp/new | Should -BeFalse
    }

    It 'removes a file and an empty directory without -Recurse, and only a link, not its target' {
        Invoke-Guest 'echo keep > /tmp/keep && ln -s /tmp/keep /tmp/keeplink'
        Remove-SandboxItem -Name files -Path /tmp/keeplink, /tmp/newdir
        Test-SandboxPath -Name files /tmp/keep | Should -BeTrue
        Test-SandboxPath -Name files /tmp/keeplink, /tmp/newdir | Should -Be @($false, $false)
        Remove-SandboxItem -Name files -Path /tmp/keep
        Test-SandboxPath -Name files /tmp/keep | Should -BeFalse
    }

    It 'says SandboxPathNotFound for each path that is not there, and removes the others' {
        Invoke-Guest 'touch /tmp/there'
        $r = Invoke-Captured { Remove-SandboxItem -Name files -Path /tmp/not-there, /tmp/there }
        $r.Errors | Should -HaveCount 1
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxPathNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be '/tmp/not-there'
        Test-SandboxPath -Name files /tmp/there | Should -BeFalse
    }

    It 'changes nothing with -WhatIf' {
        Invoke-Guest 'touch /tmp/whatif'
        Remove-SandboxItem -Name files -Path /tmp/whatif -WhatIf
        Test-SandboxPath -Name files /tmp/whatif | Should -BeTrue
    }
}

Describe 'A stopped sandbox' -Tag VM {
    BeforeAll {
        $null = Stop-Sandbox -Name files-b
    }

    It 'says SandboxNotRunning for <Name>' -ForEach @(
        @{ Name = 'Copy-SandboxItem'; Block = { Copy-SandboxItem -Path $PSCommandPath -ToSandbox files-b -Destination /tmp } }
        @{ Name = 'Get-SandboxChildItem'; Block = { Get-SandboxChildItem -Name files-b /tmp } }
        @{ Name = 'Get-SandboxContent'; Block = { Get-SandboxContent -Name files-b /etc/hostname } }
        @{ Name = 'Test-SandboxPath'; Block = { Test-SandboxPath -Name files-b /tmp } }
        @{ Name = 'Set-SandboxContent'; Block = { Set-SandboxContent -Name files-b /tmp/x 'value' } }
        @{ Name = 'New-SandboxItem'; Block = { New-SandboxItem -Name files-b /tmp/new -ItemType Directory } }
        @{ Name = 'Remove-SandboxItem'; Block = { Remove-SandboxItem -Name files-b /tmp -Recurse -Confirm:$false } }
        @{ Name = 'Send-SandboxSignal'; Block = { Send-SandboxSignal -Name files-b -ProcessId 2 } }
        @{
            Name  = 'Copy-SandboxItem -FromSandbox'
            Block = { Copy-SandboxItem -Path /etc/hostname -FromSandbox files-b -Destination $script:Scratch }
        }
        @{
            Name  = 'Copy-SandboxItem from it to a running sandbox'
            Block = { Copy-SandboxItem -Path /etc/hostname -FromSandbox files-b -ToSandbox files -Destination /tmp }
        }
        @{
            Name  = 'Copy-SandboxItem from a running sandbox to it'
            Block = { Copy-SandboxItem -Path /etc/hostname -FromSandbox files -ToSandbox files-b -Destination /tmp }
        }
    ) {
        $r = Invoke-Captured $Block
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotRunning'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidOperation'
        $r.Errors[0].TargetObject | Should -Be 'files-b'
    }

    It 'sets $LASTEXITCODE to -1 for a command it cannot run' {
        Invoke-Guest 'true'
        $r = Invoke-Captured { Invoke-SandboxCommand -Name files-b 'true' }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotRunning'
        $LASTEXITCODE | Should -Be -1
    }
}
