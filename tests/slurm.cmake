# Tests of the job scripts in jobs/ (tests/slurm/*.sh), label `slurm`:
#   ctest --test-dir BUILD -L slurm --output-on-failure
# slurm_requeue_resume and slurm_double_submit each start a private one-node
# Slurm (tests/slurm/start-cluster.sh: munge, slurmctld, slurmd from Debian,
# installed when missing; needs root), slurm_multinode a two-node one, and
# stop it at the end whatever the result; they fail, never skip, where Slurm cannot start. They take one
# lock so that they never run side by side. local_requeue_resume needs only
# mpirun (jobs/local.sh). Each script takes the executable, the source folder
# and the MPI launcher.
if(MPIEXEC_EXECUTABLE)
  set(MPIVAE_SLURM_MPIEXEC ${MPIEXEC_EXECUTABLE})
else()
  set(MPIVAE_SLURM_MPIEXEC mpirun)
endif()
foreach(t IN ITEMS slurm_requeue_resume slurm_double_submit local_requeue_resume)
  add_test(NAME ${t}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/slurm/${t}.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                   ${MPIVAE_SLURM_MPIEXEC})
  set_tests_properties(${t} PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" TIMEOUT 240)
endforeach()
set_tests_properties(slurm_requeue_resume slurm_double_submit PROPERTIES LABELS slurm RESOURCE_LOCK mpivae_local_slurm)
set_tests_properties(local_requeue_resume PROPERTIES LABELS "slurm;mpi")
# jobs/train-multinode.sbatch on a two-node Slurm on this one machine (start-cluster.sh with
# MPIVAE_SLURM_NODES=2: two slurmd, nodes n1 and n2 in their own UTS namespaces), 2 nodes x 2 tasks:
# signalled, requeued, resumed, identical bit for bit to an uninterrupted job of the same layout.
add_test(NAME slurm_multinode
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/slurm/slurm_multinode.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                 ${MPIVAE_SLURM_MPIEXEC})
set_tests_properties(slurm_multinode PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" TIMEOUT 240 LABELS slurm
                     RESOURCE_LOCK mpivae_local_slurm)
# The same requeue and exact resume for --model hvae (a small one: 8x8 images, scales 4 and 8 channels).
add_test(NAME slurm_requeue_resume_hvae
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/slurm/slurm_requeue_resume.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                 ${MPIVAE_SLURM_MPIEXEC})
set_tests_properties(slurm_requeue_resume_hvae PROPERTIES
                     ENVIRONMENT "${MPIVAE_TEST_ENV};MPIVAE_TEST_EPOCHS=30;MPIVAE_TEST_MODEL_ARGS=--model hvae --hidden 4,8 --groups 1,1 --latent 2"
                     TIMEOUT 240 LABELS slurm RESOURCE_LOCK mpivae_local_slurm)
