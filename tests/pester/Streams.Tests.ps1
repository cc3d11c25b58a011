#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# A command's streams: pipeline input as stdin, -InputObject and -InputFile, merged stderr, binary
# output, time limits. One sandbox serves every test.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $null = New-Sandbox -Name streams -WarningAction SilentlyContinue -ErrorAction Stop
    $script:Scratch = Join-Path ([IO.Path]::GetTempPath()) "msb-streams-$PID"
    New-Item -ItemType Directory -Force $script:Scratch | Out-Null

    function Get-Sha256([byte[]] $Bytes) {
        [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($Bytes)).ToLowerInvariant()
    }

    function Get-GuestCount([string] $Pattern) {
        <# How many guest processes' command lines match ^Pattern, once the count is 0 or 15 s passed. #>
        # A kill reaches the guest a moment after the host side has returned.
        $deadline = [DateTime]::UtcNow.AddSeconds(15)
        do {
            $count = Invoke-SandboxCommand -Name streams "ps -o args | grep -c '^$Pattern' || true"
            if ($count -eq '0') { break }
            Start-Sleep -Milliseconds 300
        } while ([DateTime]::UtcNow -lt $deadline)
        return $count
    }
}

AfterAll {
    Remove-Sandbox -Name streams -Force -ErrorAction Ignore
    Remove-Item $script:Scratch -Recurse -Force -ErrorAction Ignore
}

Describe 'Standard input' -Tag VM {
    It 'sends piped strings to the command as lines' {
        'pear', 'apple', 'fig' | Invoke-SandboxCommand -Name streams 'sort' | Should -Be @('apple', 'fig', 'pear')
    }

    It 'sends piped bytes and byte arrays as they are' {
        [byte[]](1, 2, 0, 255) | Invoke-SandboxCommand -Name streams 'od -An -tu1' |
            ForEach-Object Trim | Should -Be '1   2   0 255'
        , [byte[]](10, 0, 13) | Invoke-SandboxCommand -Name streams 'wc -c' | Should -Be '3'
    }

    It 'takes -InputObject without the pipeline' {
        Invoke-SandboxCommand -Name streams 'cat' -InputObject 'given' | Should -Be 'given'
    }

    It 'takes a byte array with -InputObject, as it is' {
        Invoke-SandboxCommand -Name streams 'od -An -tu1' -InputObject ([byte[]](1, 2, 0, 255)) |
            ForEach-Object Trim | Should -Be '1   2   0 255'
    }

    It 'sends a host file with -InputFile, byte for byte' {
        $bytes = [byte[]]::new(3MB)
        [Random]::new(7).NextBytes($bytes)
        $file = Join-Path $script:Scratch 'input.bin'
        [IO.File]::WriteAllBytes($file, $bytes)
        Invoke-SandboxCommand -Name streams 'sha256sum | cut -d" " -f1' -InputFile $file |
            Should -Be (Get-Sha256 $bytes)
    }

    It 'says InputFileNotFound for a file that is not there' {
        $missing = Join-Path $script:Scratch 'missing.bin'
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'cat' -InputFile $missing }
        Get-ErrorId $r.Errors[0] | Should -Be 'InputFileNotFound'
        $r.Errors[0].TargetObject | Should -Be $missing
    }

    It 'says InputConflict for piped input beside -InputFile, or piped into a job, and runs nothing' {
        $file = Join-Path $script:Scratch 'conflict.txt'
        Set-Content $file 'from-file'
        $r = Invoke-Captured { 'piped' | Invoke-SandboxCommand -Name streams 'cat > /tmp/conflict' -InputFile $file }
        Get-ErrorId $r.Errors[0] | Should -Be 'InputConflict'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -Be $file
        $r = Invoke-Captured { 'piped' | Invoke-SandboxCommand -Name streams 'cat > /tmp/conflict' -AsJob }
        Get-ErrorId $r.Errors[0] | Should -Be 'InputConflict'
        $r.Errors[0].TargetObject | Should -Be 'piped'
        Get-Job | Where-Object Command -EQ 'cat > /tmp/conflict' | Should -BeNullOrEmpty
        Invoke-SandboxCommand -Name streams 'test -e /tmp/conflict && echo ran || echo none' | Should -Be 'none'
    }

    It 'gives end of file at once without input' {
        Invoke-SandboxCommand -Name streams 'wc -c' | Should -Be '0'
    }

    It 'stops feeding a command that closed its input, and still returns its output' {
        1..20000 | ForEach-Object { "line $_" } | Invoke-SandboxCommand -Name streams 'head -n 2' |
            Should -Be @('line 1', 'line 2')
        $LASTEXITCODE | Should -Be 0
    }

    It 'still runs the command once per piped sandbox' {
        Get-Sandbox -Name streams | Invoke-SandboxCommand 'echo per-sandbox' | Should -Be 'per-sandbox'
    }
}

Describe 'Output' -Tag VM {
    It 'merges stderr into the output with -MergeError' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'echo out; echo err >&2' -MergeError }
        $r.Errors | Should -BeNullOrEmpty
        $r.Output | Should -Contain 'out'
        $r.Output | Should -Contain 'err'
    }

    It 'keeps the order of stdout and stderr lines with -MergeError' {
        Invoke-SandboxCommand -Name streams 'echo 1; sleep 0.2; echo 2 >&2; sleep 0.2; echo 3' -MergeError |
            Should -Be @('1', '2', '3')
    }

    It 'keeps the order of output and error records in a 2>&1 capture' {
        $ErrorActionPreference = 'Continue'
        $all = @(Invoke-SandboxCommand -Name streams 'echo 1; sleep 0.2; echo 2 >&2; sleep 0.2; echo 3' 2>&1)
        $all | ForEach-Object { "$_" } | Should -Be @('1', '2', '3')
        $all[0] | Should -BeOfType [string]
        $all[1] | Should -BeOfType [Management.Automation.ErrorRecord]
        Get-ErrorId $all[1] | Should -Be 'SandboxCommandStderr'
        $all[2] | Should -BeOfType [string]
    }

    It 'keeps binary output intact with -AsByteStream' {
        # Every byte value, twice, through the guest's printf.
        $chunks = @(Invoke-SandboxCommand -Name streams -AsByteStream `
            'i=0; while [ $i -lt 512 ]; do printf "\\$(printf %o $((i % 256)))"; i=$((i+1)); done')
        $chunks[0] | Should -BeOfType [byte]
        $all = [byte[]]($chunks | ForEach-Object { $_ })
        $expected = [byte[]]((0..511) | ForEach-Object { $_ % 256 })
        $all.Length | Should -Be 512
        Get-Sha256 $all | Should -Be (Get-Sha256 $expected)
    }

    It 'streams tens of megabytes through with checksums equal on both sides' {
        $bytes = [byte[]]::new(24MB)
        [Random]::new(11).NextBytes($bytes)
        $file = Join-Path $script:Scratch 'round.bin'
        [IO.File]::WriteAllBytes($file, $bytes)
        $hash = [Security.Cryptography.IncrementalHash]::CreateHash('SHA256')
        Invoke-SandboxCommand -Name streams 'cat' -InputFile $file -AsByteStream |
            ForEach-Object { $hash.AppendData($_) }
        [Convert]::ToHexString($hash.GetHashAndReset()).ToLowerInvariant() | Should -Be (Get-Sha256 $bytes)
    }
}

Describe 'Time limits' -Tag VM {
    It 'kills the process tree after -Timeout and says SandboxCommandTimedOut' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'sleep 300 & sleep 300; echo never' -Timeout 2 }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxCommandTimedOut'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'OperationTimeout'
        $r.Errors[0].TargetObject | Should -Be 'streams'
        $LASTEXITCODE | Should -Be 137
        # The background sleep went with its parent.
        Invoke-SandboxCommand -Name streams 'ps -o args | grep -c "^sleep 300" || true' | Should -Be '0'
    }

    It 'kills a double-forked process too, which PID 1 adopted and no walk of parents finds' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams '(sleep 305 &); sleep 300' -Timeout 2 }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxCommandTimedOut'
        Get-GuestCount 'sleep 30[05]' | Should -Be '0'
    }
}

Describe 'Ctrl+C' -Tag VM {
    It 'stops the command in the guest when the pipeline is stopped<Case>' -ForEach @(
        @{ Case = ''; Script = "Invoke-SandboxCommand -Name streams 'echo ready; sleep 303'"; Pattern = 'sleep 303' }
        @{
            Case    = ', while stdin is still being fed'
            Script  = "1..1e6 | Invoke-SandboxCommand -Name streams 'echo ready; sleep 304; cat'"
            Pattern = 'sleep 304'
        }
    ) {
        # A runspace of its own, stopped from here as Ctrl+C stops a pipeline.
        $ps = [powershell]::Create()
        $null = $ps.AddScript("Import-Module '$($env:MSB_TEST_MODULE_PATH)'; $Script")
        $output = [Management.Automation.PSDataCollection[psobject]]::new()
        $handle = $ps.BeginInvoke([Management.Automation.PSDataCollection[psobject]]::new(), $output)
        $deadline = [DateTime]::UtcNow.AddSeconds(60)
        # Indexed, not enumerated: enumerating an open PSDataCollection waits for it to close.
        while ("$(if ($output.Count) { $output[0] })" -ne 'ready' -and -not $handle.IsCompleted -and
            [DateTime]::UtcNow -lt $deadline) {
            Start-Sleep -Milliseconds 100
        }
        "$($output[0])" | Should -Be 'ready'

        $ps.Stop()

        $ps.InvocationStateInfo.State | Should -Be 'Stopped'
        $ps.InvocationStateInfo.Reason | Should -BeOfType [Management.Automation.PipelineStoppedException]
        $ps.Streams.Error.ReadAll() | Should -BeNullOrEmpty
        $ps.Dispose()
        Get-GuestCount $Pattern | Should -Be '0'
    }
}

Describe 'Exit codes of commands that never ran' -Tag VM {
    BeforeAll {
        Invoke-SandboxCommand -Name streams 'printf "#!/bin/sh\necho x\n" > /tmp/rootonly; chmod 700 /tmp/rootonly'
    }

    It 'sets $LASTEXITCODE to <Code> on <Id>, as a shell does' -ForEach @(
        @{ Id = 'CommandNotFound'; Code = 127; Block = { Invoke-SandboxCommand -Name streams -FilePath /no/such } }
        @{
            Id    = 'PermissionDenied'; Code = 126
            Block = { Invoke-SandboxCommand -Name streams -FilePath /tmp/rootonly -User nobody }
        }
        @{
            Id    = 'WorkingDirectoryNotFound'; Code = -1
            Block = { Invoke-SandboxCommand -Name streams 'pwd' -WorkingDirectory /no/such }
        }
    ) {
        Invoke-SandboxCommand -Name streams 'true'
        $LASTEXITCODE | Should -Be 0
        $r = Invoke-Captured $Block
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be $Id
        $LASTEXITCODE | Should -Be $Code
    }
}

Describe 'Commands at once' -Tag VM {
    It 'runs several commands in one sandbox at the same time, from threads and from other processes' {
        Invoke-SandboxCommand -Name streams 'rm -f /tmp/barrier'
        # Each command waits until all four have started: they can only finish if they run at once.
        $wait = 'echo $0 >> /tmp/barrier; n=0; while [ $(wc -l < /tmp/barrier) -lt 4 ]; do ' +
            'n=$((n+1)); [ $n -gt 600 ] && exit 9; sleep 0.1; done; echo done $0'
        $children = 1..2 | ForEach-Object {
            $script = "Invoke-SandboxCommand -Name streams -FilePath /bin/sh -ArgumentList '-c', '$wait', 'child$_'"
            Start-Job -ScriptBlock {
                param($Module, $MsbHome, $Script)
                $env:MSB_HOME = $MsbHome
                Import-Module $Module
                Invoke-Expression $Script
            } -ArgumentList $env:MSB_TEST_MODULE_PATH, $env:MSB_HOME, $script
        }
        $module = $env:MSB_TEST_MODULE_PATH
        $threads = 1..2 | ForEach-Object -ThrottleLimit 2 -Parallel {
            Import-Module $using:module
            Invoke-SandboxCommand -Name streams -FilePath /bin/sh -ArgumentList '-c', $using:wait, "thread$_"
        }
        $fromChildren = $children | Wait-Job -Timeout 120 | Receive-Job
        $children | Remove-Job -Force
        @($threads) + @($fromChildren) | Sort-Object | Should -Be @('done child1', 'done child2', 'done thread1', 'done thread2')
    }
}

Describe 'A gigabyte through a command' -Tag VM {
    It 'echoes 1 GiB through cat with equal checksums and flat host memory' {
        $chunk = [byte[]]::new(1MB)
        [Random]::new(5).NextBytes($chunk)
        $sent = [Security.Cryptography.IncrementalHash]::CreateHash('SHA256')
        $received = [Security.Cryptography.IncrementalHash]::CreateHash('SHA256')
        $self = Get-Process -Id $PID
        $runtime = Get-Process -Id (Get-Sandbox -Name streams).RuntimePid
        [GC]::Collect()
        $self.Refresh()
        $before = $self.WorkingSet64
        $state = @{ Bytes = [long]0; Peak = [long]0; RuntimePeak = [long]0 }
        & {
            for ($i = 0; $i -lt 1024; $i++) {
                # Every megabyte differs, so a lost or repeated chunk changes the checksum.
                $copy = [byte[]]$chunk.Clone()
                [BitConverter]::GetBytes($i).CopyTo($copy, 0)
                $sent.AppendData($copy)
                , $copy
            }
        } | Invoke-SandboxCommand -Name streams 'cat' -AsByteStream | ForEach-Object {
            $received.AppendData($_)
            $state.Bytes += $_.Length
            if (($state.Bytes % 32MB) -lt $_.Length) {
                $self.Refresh(); $runtime.Refresh()
                $state.Peak = [Math]::Max($state.Peak, $self.WorkingSet64)
                $state.RuntimePeak = [Math]::Max($state.RuntimePeak, $runtime.WorkingSet64)
            }
        }
        $state.Bytes | Should -Be 1GB
        [Convert]::ToHexString($received.GetHashAndReset()) | Should -Be ([Convert]::ToHexString($sent.GetHashAndReset()))
        # A gigabyte held anywhere on the way would show here; flow control keeps it to windows.
        ($state.Peak - $before) / 1MB | Should -BeLessThan 256
        $state.RuntimePeak / 1MB | Should -BeLessThan 128
    }

    It 'streams 1 GiB into a guest checksum that equals the host''s, with flat host memory' {
        $chunk = [byte[]]::new(1MB)
        [Random]::new(6).NextBytes($chunk)
        $sent = [Security.Cryptography.IncrementalHash]::CreateHash('SHA256')
        $self = Get-Process -Id $PID
        [GC]::Collect()
        $self.Refresh()
        $before = $self.WorkingSet64
        $state = @{ Peak = [long]0 }
        $guest = & {
            for ($i = 0; $i -lt 1024; $i++) {
                $copy = [byte[]]$chunk.Clone()
                [BitConverter]::GetBytes($i).CopyTo($copy, 0)
                $sent.AppendData($copy)
                if ($i % 32 -eq 0) {
                    $self.Refresh()
                    $state.Peak = [Math]::Max($state.Peak, $self.WorkingSet64)
                }
                , $copy
            }
        } | Invoke-SandboxCommand -Name streams -Command 'sha256sum' -ErrorAction Stop
        # The guest hashed what reached its stdin; the host, what it sent.
        ($guest -split ' ')[0] | Should -Be ([Convert]::ToHexString($sent.GetHashAndReset()).ToLowerInvariant())
        ($state.Peak - $before) / 1MB | Should -BeLessThan 256
    }
}

Describe 'Jobs and signals' -Tag VM {
    BeforeAll {
        function Wait-JobOutput($Job, [string] $Text) {
            $deadline = [DateTime]::UtcNow.AddSeconds(60)
            while ([DateTime]::UtcNow -lt $deadline) {
                if (@($Job.Output) -contains $Text) { return }
                Start-Sleep -Milliseconds 200
            }
            throw "The job never wrote '$Text'."
        }
    }

    It 'runs a command as a job named after its sandbox, with output, errors and exit code' {
        $job = Invoke-SandboxCommand -Name streams 'echo one; echo two >&2' -AsJob
        $job.PSJobTypeName | Should -Be 'SandboxCommandJob'
        $job.Name | Should -Be 'streams'
        $null = $job | Wait-Job -Timeout 60
        $job.State | Should -Be 'Completed'
        $job.ExitCode | Should -Be 0
        $job.ProcessId | Should -BeGreaterThan 1
        $out = Receive-Job $job -ErrorVariable errs -ErrorAction SilentlyContinue
        $out | Should -Be 'one'
        "$($errs[0])" | Should -Be 'two'
        $job | Remove-Job
    }

    It 'fails the job on a non-zero exit' {
        $job = Invoke-SandboxCommand -Name streams 'exit 4' -AsJob
        $null = $job | Wait-Job -Timeout 60
        $job.State | Should -Be 'Failed'
        $job.ExitCode | Should -Be 4
        $job | Remove-Job
    }

    It 'delivers a signal to the job''s command through Send-SandboxSignal' {
        $job = Invoke-SandboxCommand -Name streams `
            'trap "echo got-term; exit 7" TERM; echo ready; while true; do sleep 1; done' -AsJob
        Wait-JobOutput $job 'ready'
        $job | Send-SandboxSignal -Signal TERM -WhatIf
        Start-Sleep -Seconds 1
        $job.State | Should -Be 'Running'
        $job | Send-SandboxSignal -Signal SIGTERM
        $null = $job | Wait-Job -Timeout 60
        $job.ExitCode | Should -Be 7
        @($job.Output) | Should -Contain 'got-term'
        $job | Remove-Job
    }

    It 'stops the job and its process tree with Stop-Job, a double-forked process too' {
        $job = Invoke-SandboxCommand -Name streams 'echo ready; sleep 301 & (sleep 308 &); sleep 302' -AsJob
        Wait-JobOutput $job 'ready'
        $job | Stop-Job
        $null = $job | Wait-Job -Timeout 60
        $job.State | Should -Be 'Stopped'
        Get-GuestCount 'sleep 30[128]' | Should -Be '0'
        $job | Remove-Job
    }

    It 'signals the whole tree with Send-SandboxSignal -ProcessTree, a double-forked process too' {
        $job = Invoke-SandboxCommand -Name streams 'echo ready; (sleep 306 &); sleep 307' -AsJob
        Wait-JobOutput $job 'ready'
        Send-SandboxSignal -Name streams -ProcessId $job.ProcessId -Signal TERM -ProcessTree
        $null = $job | Wait-Job -Timeout 60
        $job.State | Should -Be 'Failed'
        $job.ExitCode | Should -Be 143
        Get-GuestCount 'sleep 30[67]' | Should -Be '0'
        $job | Remove-Job
    }

    It 'kills a job''s command after -Timeout, with SandboxCommandTimedOut' {
        $job = Invoke-SandboxCommand -Name streams 'sleep 309' -Timeout 2 -AsJob
        $null = $job | Wait-Job -Timeout 60
        $job.State | Should -Be 'Failed'
        $job.ExitCode | Should -Be 137
        Get-ErrorId @($job.Error)[0] | Should -Be 'SandboxCommandTimedOut'
        $job | Remove-Job
    }

    It 'feeds a job''s command from -InputFile' {
        $file = Join-Path $script:Scratch 'job-input.txt'
        [IO.File]::WriteAllText($file, "pear`napple`n")
        $job = Invoke-SandboxCommand -Name streams 'sort' -InputFile $file -AsJob
        $null = $job | Wait-Job -Timeout 60
        $job.State | Should -Be 'Completed'
        Receive-Job $job | Should -Be @('apple', 'pear')
        $job | Remove-Job
    }

    It 'says ProcessNotFound, InvalidSignal and InputFileNotFound' {
        $r = Invoke-Captured { Send-SandboxSignal -Name streams -ProcessId 999999 }
        Get-ErrorId $r.Errors[0] | Should -Be 'ProcessNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be 999999
        $r = Invoke-Captured { Send-SandboxSignal -Name streams -ProcessId 1 -Signal KILL }
        Get-ErrorId $r.Errors[0] | Should -Be 'ProcessNotFound'
        $r = Invoke-Captured { Send-SandboxSignal -Name streams -ProcessId 2 -Signal BOGUS }
        Get-ErrorId $r.Errors[0] | Should -Be 'InvalidSignal'
        $r.Errors[0].TargetObject | Should -Be 'BOGUS'
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'cat' -AsJob -InputFile (Join-Path $script:Scratch 'nope') }
        Get-ErrorId $r.Errors[0] | Should -Be 'InputFileNotFound'
    }
}
