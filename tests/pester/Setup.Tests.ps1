#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# New-Sandbox -Script and -Patch: named scripts on every command's PATH, and writes, appends,
# folders, host copies and removals in the root before the sandbox is handed out. One sandbox
# carries every kind; bad scripts and patches are refused before any VM starts, and a patch that
# fails in the guest takes its sandbox with it.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $script:Scratch = Join-Path ([IO.Path]::GetTempPath()) "msb-setup-$PID"
    New-Item -ItemType Directory -Force "$script:Scratch/site/css" | Out-Null
    Set-Content "$script:Scratch/site/index.html" '<h1>hi</h1>' -NoNewline
    Set-Content "$script:Scratch/site/css/main.css" 'body{}' -NoNewline
    Set-Content "$script:Scratch/tool" "#!/bin/sh`necho tool ran" -NoNewline
    [IO.File]::SetUnixFileMode("$script:Scratch/tool", [Convert]::ToInt32('755', 8))
    [IO.File]::SetLastWriteTimeUtc("$script:Scratch/site/index.html", [DateTime]::UnixEpoch.AddSeconds(1600000000))

    $script:Box = New-Sandbox -Name setup -WarningAction SilentlyContinue -ErrorAction Stop -Script @{
        greet     = 'echo "hello from $1"'
        'show.sh' = "#!/bin/sh`necho shebang kept"
    } -Patch @(
        @{ Write = '/etc/motd'; Content = 'welcome'; Mode = '0600' }
        @{ Write = '/opt/app/conf/app.json'; Content = [byte[]](0x7B, 0x7D, 0x0A) }
        @{ Append = '/etc/hosts'; Content = "10.9.8.7 db`n" }
        @{ Append = '/var/log/new.log'; Content = 'first' }
        @{ Directory = '/data/cache'; Mode = 750 }
        @{ Copy = "$script:Scratch/site"; Destination = '/srv/site' }
        @{ Copy = "$script:Scratch/tool"; Destination = '/usr/local/bin/tool' }
        @{ Write = '/tmp/doomed'; Content = 'x' }
        @{ Remove = '/tmp/doomed' }
        @{ Remove = '/no/such/path' }
        @{ Remove = '/etc/hostname' }
        @{ Remove = '/mnt' }
    )

    function Invoke-Guest([string] $Command) {
        Invoke-SandboxCommand -Name setup -Command $Command -ErrorAction Stop
    }
}

AfterAll {
    Get-Sandbox -Name 'setup*' -ErrorAction Ignore | Remove-Sandbox -Force
    Remove-Item $script:Scratch -Recurse -Force -ErrorAction Ignore
}

Describe 'New-Sandbox -Script' -Tag VM {
    It 'places each script at /.msb/scripts, executable, on the PATH of every command' {
        Invoke-Guest 'stat -c "%a %n" /.msb/scripts/greet /.msb/scripts/show.sh' |
            Should -Be @('755 /.msb/scripts/greet', '755 /.msb/scripts/show.sh')
        Invoke-Guest 'greet world' | Should -Be 'hello from world'
        Invoke-Guest 'show.sh' | Should -Be 'shebang kept'
        (Invoke-Guest 'echo $PATH') -split ':' | Select-Object -Last 1 | Should -Be '/.msb/scripts'
    }

    It 'gives a script without a #! line one, so it runs without a shell too' {
        Invoke-Guest 'head -n 1 /.msb/scripts/greet' | Should -Be '#!/bin/sh'
        Invoke-SandboxCommand -Name setup -FilePath greet -ArgumentList exec -ErrorAction Stop | Should -Be 'hello from exec'
    }

    It 'keeps the PATH on commands that set their own environment' {
        Invoke-SandboxCommand -Name setup 'greet env' -Environment @{ FOO = 'bar' } -ErrorAction Stop |
            Should -Be 'hello from env'
    }

    It 'keeps the scripts on the PATH of a command that sets its own PATH' {
        Invoke-SandboxCommand -Name setup 'greet path; echo $PATH' -Environment @{ PATH = '/usr/bin:/bin' } `
            -ErrorAction Stop | Should -Be @('hello from path', '/usr/bin:/bin:/.msb/scripts')
        Invoke-SandboxCommand -Name setup -FilePath greet -ArgumentList exec -Environment @{ PATH = '/bin' } `
            -ErrorAction Stop | Should -Be 'hello from exec'
    }
}

Describe 'New-Sandbox -Patch' -Tag VM {
    It 'writes files with their mode, making missing parents' {
        Invoke-Guest 'cat /etc/motd; echo; stat -c %a /etc/motd' | Should -Be @('welcome', '600')
        Invoke-Guest 'od -An -tx1 /opt/app/conf/app.json' | ForEach-Object Trim | Should -Be '7b 7d 0a'
        Invoke-Guest 'stat -c %a /opt/app/conf/app.json' | Should -Be '644'
    }

    It 'appends to a file of the image and creates one that is missing' {
        Invoke-Guest 'tail -n 1 /etc/hosts' | Should -Be '10.9.8.7 db'
        Invoke-Guest 'grep -c localhost /etc/hosts' | Should -Not -Be '0'
        Invoke-Guest 'cat /var/log/new.log' | Should -Be 'first'
    }

    It 'makes folders with their mode' {
        Invoke-Guest 'stat -c "%F %a" /data/cache' | Should -Be 'directory 750'
    }

    It 'copies host folders and files with modes and times kept' {
        Invoke-Guest 'cat /srv/site/index.html; echo; cat /srv/site/css/main.css' | Should -Be @('<h1>hi</h1>', 'body{}')
        Invoke-Guest 'stat -c %Y /srv/site/index.html' | Should -Be '1600000000'
        Invoke-Guest 'stat -c %a /usr/local/bin/tool; tool' | Should -Be @('755', 'tool ran')
    }

    It 'removes paths in order, and a missing path is no error' {
        Invoke-Guest 'test -e /tmp/doomed && echo there || echo gone' | Should -Be 'gone'
    }

    It 'removes files and folders that come from the image' {
        Invoke-Guest 'for p in /etc/hostname /mnt; do test -e $p && echo "$p there" || echo "$p gone"; done' |
            Should -Be @('/etc/hostname gone', '/mnt gone')
        Invoke-Guest 'test -e /etc/passwd && echo kept' | Should -Be 'kept'
    }

    It 'applies once: a restart keeps what the patches wrote and does not append again' {
        Stop-Sandbox -Name setup -ErrorAction Stop
        Start-Sandbox -Name setup -ErrorAction Stop | Out-Null
        Invoke-Guest 'grep -c 10.9.8.7 /etc/hosts; cat /etc/motd; echo; greet again; test -e /mnt || echo gone' |
            Should -Be @('1', 'welcome', 'hello from again', 'gone')
    }
}

Describe 'Setup before the sandbox is handed out' -Tag VM {
    It 'holds the sandbox Starting while its patches go in, so no other session runs a command first' {
        $big = Join-Path $script:Scratch 'big.bin'
        $bytes = [byte[]]::new(24MB)
        [Random]::new(7).NextBytes($bytes)
        [IO.File]::WriteAllBytes($big, $bytes)
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $env:MSB_TEST_MODULE_PATH).AddStatement()
            $null = $ps.AddScript("New-Sandbox -Name setup-held -MemoryMB 128 -WarningAction SilentlyContinue -Patch @{ Copy = '$big'; Destination = '/root/big.bin' }")
            $async = $ps.BeginInvoke()
            # The runtime logs the hold once the agent is ready and before the copy is done.
            $deadline = [DateTime]::UtcNow.AddSeconds(120)
            do {
                Start-Sleep -Milliseconds 50
                $s = Get-Sandbox -Name setup-held -ErrorAction Ignore
                $log = if ($s) { Get-SandboxLog -Name setup-held -Kind Runtime -ErrorAction Ignore }
            } until (($log -like '*holding the sandbox for its setup') -or $async.IsCompleted -or
                [DateTime]::UtcNow -gt $deadline)
            $async.IsCompleted | Should -BeFalse -Because 'the copy of 24 MiB takes seconds'
            (Get-Sandbox -Name setup-held).State | Should -Be 'Starting'
            $r = Invoke-Captured { Invoke-SandboxCommand -Name setup-held -Command 'ls /root' }
            Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotRunning'
            $made = $ps.EndInvoke($async)
            $ps.Streams.Error | Should -BeNullOrEmpty
        }
        finally {
            $ps.Dispose()
        }

        $made.State | Should -Be 'Running'
        (Get-Sandbox -Name setup-held).State | Should -Be 'Running'
        $hash = (Get-FileHash $big -Algorithm SHA256).Hash.ToLowerInvariant()
        Invoke-SandboxCommand -Name setup-held -Command 'sha256sum /root/big.bin' -ErrorAction Stop |
            Should -Be "$hash  /root/big.bin"
        $runtime = Get-SandboxLog -Name setup-held -Kind Runtime
        $held = [array]::FindIndex([string[]]$runtime, [Predicate[string]]{ $args[0] -like '*holding the sandbox for its setup' })
        $done = [array]::FindIndex([string[]]$runtime, [Predicate[string]]{ $args[0] -like '*setup done' })
        $held | Should -BeGreaterOrEqual 0
        $done | Should -BeGreaterThan $held
        Remove-Sandbox -Name setup-held -Force
    }

    It 'stops a sandbox whose creating session is killed during its setup, and says why' {
        $big = Join-Path $script:Scratch 'big.bin'
        $pwsh = (Get-Process -Id $PID).Path
        $prefix = @(if ($pwsh -match 'dotnet(\.exe)?$') { "$PSHOME/pwsh.dll" })
        $script = "Import-Module '$($env:MSB_TEST_MODULE_PATH)'; " +
            "New-Sandbox -Name setup-orphan -MemoryMB 128 -WarningAction SilentlyContinue -Patch @{ Copy = '$big'; Destination = '/root/big.bin' }"
        $process = Start-Process $pwsh -ArgumentList (@($prefix) + '-NoProfile', '-NonInteractive', '-Command', $script) -PassThru
        try {
            $deadline = [DateTime]::UtcNow.AddSeconds(120)
            do {
                Start-Sleep -Milliseconds 50
                $log = if (Get-Sandbox -Name setup-orphan -ErrorAction Ignore) {
                    Get-SandboxLog -Name setup-orphan -Kind Runtime -ErrorAction Ignore
                }
            } until (($log -like '*holding the sandbox for its setup') -or $process.HasExited -or
                [DateTime]::UtcNow -gt $deadline)
            $process.HasExited | Should -BeFalse
        }
        finally {
            Stop-Process -Id $process.Id -Force
        }

        $done = Wait-Sandbox -Name setup-orphan -Timeout 60 -PassThru
        $done.State | Should -Be 'Stopped'
        $done.Reason | Should -Be 'Stopped because its setup did not finish: the session creating it went away.'
        Remove-Sandbox -Name setup-orphan -Force
    }
}

Describe 'Bad scripts and patches' -Tag VM {
    BeforeAll {
        $script:QemuBefore = @(Get-QemuPid).Count
        function Assert-NothingLeft([string] $Name) {
            Get-Sandbox -Name $Name -ErrorAction Ignore | Should -BeNullOrEmpty
            @(Get-QemuPid).Count | Should -Be $script:QemuBefore
            # Every sandbox folder belongs to a sandbox that is still recorded.
            Get-ChildItem (Join-Path $env:MSB_HOME 'sandboxes') -Directory -ErrorAction Ignore |
                Should -HaveCount (@(Get-Sandbox).Count)
        }
    }

    It 'refuses a script name that is not a plain file name, with InvalidScriptName' -TestCases @(
        @{ Bad = '../escape' }, @{ Bad = 'a b' }, @{ Bad = '' }, @{ Bad = '..' }
    ) {
        $r = Invoke-Captured { New-Sandbox -Name setup-bad -Script @{ $Bad = 'true' } }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'InvalidScriptName'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -Be $Bad
        Assert-NothingLeft setup-bad
    }

    It 'refuses a patch it cannot read, with InvalidPatch and the hashtable as target' -TestCases @(
        @{ Patch = @{ Write = 'relative/path'; Content = 'x' } }
        @{ Patch = @{ Write = '/a'; Remove = '/b'; Content = 'x' } }
        @{ Patch = @{ Writ = '/a'; Content = 'x' } }
        @{ Patch = @{ Remove = '/a'; Colour = 'red' } }
        @{ Patch = @{ Write = '/a' } }
        @{ Patch = @{ Copy = $PSScriptRoot } }
        @{ Patch = @{ Directory = '/a'; Mode = '0999' } }
        @{ Patch = @{ Append = '/a'; Content = 'x'; Mode = '0644' } }
        @{ Patch = @{ Remove = '/' } }
    ) {
        $r = Invoke-Captured { New-Sandbox -Name setup-bad -Patch $Patch }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'InvalidPatch'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -BeOfType [hashtable]
        Assert-NothingLeft setup-bad
    }

    It 'refuses a host source that does not exist, with HostPathNotFound' {
        $missing = Join-Path $script:Scratch 'not-there'
        $r = Invoke-Captured { New-Sandbox -Name setup-bad -Patch @{ Copy = $missing; Destination = '/x' } }
        Get-ErrorId $r.Errors[0] | Should -Be 'HostPathNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be $missing
        Assert-NothingLeft setup-bad
    }

    It 'removes a sandbox whose patch fails in the guest, with PatchFailed, and leaves no VM' {
        $r = Invoke-Captured {
            New-Sandbox -Name setup-fail -WarningAction SilentlyContinue -Patch @(
                @{ Write = '/ok'; Content = 'fine' }
                @{ Write = '/etc/passwd/inside'; Content = 'x' }
            )
        }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'PatchFailed'
        $r.Errors[0].Exception.Message | Should -BeLike "*'/etc/passwd/inside'*"
        $r.Errors[0].TargetObject.Path | Should -Be '/etc/passwd/inside'
        Assert-NothingLeft setup-fail
    }
}
